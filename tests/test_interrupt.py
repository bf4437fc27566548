"""Runs killed with SIGKILL (training, clustering, writing) and runs that collide: never a
partial result in --out, and the rerun gives the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

RESULTS = ("stagate.h5ad", "domains.png", "summary.json")


def command(h5ad: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stagate", "run", str(h5ad), "--n-domains", "4", "--epochs",
            "200", "--quiet", "--no-umap", "--out", str(out), *extra]


def complete_or_absent(out: Path) -> None:
    """Every result file in `out` is whole; if summary.json is there, all of them are."""
    if not out.exists():
        return
    present = [n for n in RESULTS if (out / n).exists()]
    if "summary.json" in present:
        assert set(present) == set(RESULTS)
        json.loads((out / "summary.json").read_text())
    if "stagate.h5ad" in present:
        assert anndata.read_h5ad(out / "stagate.h5ad").n_obs > 0
    for n in present:
        if n.endswith(".png"):
            assert (out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory, sim_raw):
    path = tmp_path_factory.mktemp("kill") / "in.h5ad"
    sim_raw.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def reference(h5ad, tmp_path_factory):
    """The uninterrupted run, and how long it takes."""
    out = tmp_path_factory.mktemp("ref") / "out"
    t = time.perf_counter()
    subprocess.run(command(h5ad, out), check=True, capture_output=True)
    return anndata.read_h5ad(out / "stagate.h5ad"), time.perf_counter() - t


def kill_after(cmd: list[str], seconds: float, until: Path | None = None) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.perf_counter() + 120
    if until is not None:  # wait for the file that marks the moment
        while not until.exists() and proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.02)
    time.sleep(seconds)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_training_resumes_from_its_checkpoint_to_the_same_result(h5ad, reference,
                                                                       tmp_path):
    expected, _ = reference
    out, ckpt = tmp_path / "out", tmp_path / "ckpt.pt"
    cmd = command(h5ad, out, "--checkpoint", str(ckpt))
    # each voting run has its own file; killed right after run 0's epoch-100 checkpoint
    first_run = tmp_path / "ckpt.run0.pt"
    kill_after(cmd, 0.0, until=first_run)
    assert first_run.exists()
    complete_or_absent(out)
    assert not (out / "summary.json").exists()
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resuming from checkpoint" in res.stderr
    got = anndata.read_h5ad(out / "stagate.h5ad")
    np.testing.assert_array_equal(got.obsm["STAGATE"], expected.obsm["STAGATE"])
    np.testing.assert_array_equal(got.obs["domain"], expected.obs["domain"])


@pytest.mark.parametrize("fraction", [0.6, 0.95])  # mostly training; clustering or writing
def test_a_run_killed_at_any_moment_leaves_no_partial_result(h5ad, reference, tmp_path,
                                                            fraction):
    expected, seconds = reference
    out = tmp_path / "out"
    kill_after(command(h5ad, out), fraction * seconds)  # training, clustering or writing
    complete_or_absent(out)
    res = subprocess.run(command(h5ad, out, "--force"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr  # starts over
    complete_or_absent(out)
    got = anndata.read_h5ad(out / "stagate.h5ad")
    np.testing.assert_array_equal(got.obsm["STAGATE"], expected.obsm["STAGATE"])
    assert not list(tmp_path.glob(".out.stagate-tmp-*"))  # a killed run's staging is gone


def test_two_runs_into_one_folder_one_fails_clearly(h5ad, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(command(h5ad, out), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".out.stagate-lock"
    deadline = time.perf_counter() + 60
    while not lock.exists() and time.perf_counter() < deadline:
        time.sleep(0.02)
    second = subprocess.run(command(h5ad, out), capture_output=True, text=True)
    first.communicate()
    assert first.returncode == 0
    assert second.returncode == 1
    assert "Another stagate run is writing" in second.stderr
    assert "Traceback" not in second.stderr
    complete_or_absent(out)
