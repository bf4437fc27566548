"""Screenshot the top of a run's report.html with headless Chromium (for the README).

    stagate run ../shared/data/dlpfc_151673/dlpfc_151673.h5ad --n-domains 7 \
        --label-key layer --out dlpfc_out
    python docs/screenshot_report.py dlpfc_out docs/report.png
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def main() -> None:
    result, target = Path(sys.argv[1]), Path(sys.argv[2])
    height = int(sys.argv[3]) if len(sys.argv) > 3 else 2300
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                        f"--window-size=1300,{height}", f"--screenshot={target.resolve()}",
                        (result / "report.html").resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
