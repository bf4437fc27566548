"""report.html: self-contained, every section filled, rendered by a real (headless) browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from stagate.cli import cli

SECTIONS = ("run", "domains", "qc", "umap", "markers", "attention", "training")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
# what the browser reports back: images that decoded, and every error the page raised
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
const origError = console.error;
console.error = (...a) => { window.__errors.push(a.join(' ')); origError(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.title = 'PROBE' + JSON.stringify({n: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    errors: window.__errors, sections: document.querySelectorAll('section').length});
});
</script>"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, sim_raw):
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "in.h5ad"
    sim_raw.write_h5ad(path)
    out = tmp / "out"
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "4", "--epochs", "30",
                                   "--runs", "2", "--hidden-dim", "32", "--quiet",
                                   "--label-key", "domain_truth", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_report_is_self_contained_and_complete(finished_run):
    html = (finished_run / "report.html").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html, sid
    # nothing fetched from elsewhere: every image inline, no external URL in src/href
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert html.count('src="data:image/png;base64,') >= 8
    assert "markers.csv" in html
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["seconds"]["report"] > 0
    assert summary["downstream"]["markers"]["n_genes_tested"] > 0
    # with --label-key: what each domain is made of, and the PAGA path named by it
    assert "Spots of each domain_truth (columns) in each domain" in html
    assert "each domain&#39;s most frequent domain_truth" in html
    # PAGA as a graph, of the domains and of the annotation, and the annotation's path
    assert "PAGA as a graph" in html and "The same path over the annotation" in html
    markers = (finished_run / "markers.csv").read_text().splitlines()
    assert markers[0].startswith("domain,gene,score")


def test_report_command_remakes_it(finished_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    (copy / "report.html").unlink()
    res = CliRunner().invoke(cli, ["report", str(copy)])
    assert res.exit_code == 0, res.output
    assert '<section id="markers">' in (copy / "report.html").read_text()
    bad = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert bad.exit_code == 1 and "not a finished stagate run" in bad.output


def test_no_report_skips_it(sim_raw, tmp_path):
    path = tmp_path / "in.h5ad"
    sim_raw.write_h5ad(path)
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "4", "--epochs", "5",
                                   "--runs", "1", "--quiet", "--no-report", "--no-umap",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert not (out / "report.html").exists() and not (out / "markers.csv").exists()
    res = CliRunner().invoke(cli, ["report", str(out)])  # made afterwards, markers included
    assert res.exit_code == 0, res.output
    assert '<section id="markers">' in (out / "report.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_report_renders_in_a_browser(finished_run, tmp_path):
    page = tmp_path / "probe.html"
    page.write_text((finished_run / "report.html").read_text().replace("<head>",
                                                                        "<head>" + PROBE, 1))
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r"<title>PROBE(.*?)</title>", dom)
    assert found, "the page never finished loading"
    state = json.loads(found.group(1).replace("&quot;", '"'))
    assert state["n"] >= 8 and state["loaded"] == state["n"], state
    assert state["errors"] == [], state
    assert state["sections"] >= len(SECTIONS)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1300,2400",
                    f"--screenshot={shot}", (finished_run / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 2000
    assert float(np.std(pixels[..., :3])) > 0.05  # not a blank page


def test_uniform_attention_is_said_so(finished_run):
    import anndata as ad
    import scipy.sparse as sp

    from stagate.report import render_report

    adata = ad.read_h5ad(finished_run / "stagate.h5ad")
    summary = json.loads((finished_run / "summary.json").read_text())
    att = sp.csr_matrix(adata.obsp["STAGATE_attention"])
    degree = np.diff(att.indptr)
    said = "Here the attention is uniform"
    att.data = 1.0 / np.repeat(degree, degree)  # every neighbour weighed equally
    adata.obsp["STAGATE_attention"] = att
    html = render_report(adata, summary)
    assert said in html
    # and no per-spot attention map, which would be one flat colour
    assert "Attention of one border spot" not in html
    uneven = att.copy()
    uneven.data = uneven.data * np.random.default_rng(0).uniform(0.5, 1.5, uneven.nnz)
    uneven = sp.diags(1 / np.asarray(uneven.sum(1)).ravel()) @ uneven  # rows sum to 1
    adata.obsp["STAGATE_attention"] = sp.csr_matrix(uneven)
    assert said not in render_report(adata, summary)


def test_the_recipe_line_says_what_the_workers_did():
    from stagate.report._report import _side_by_side

    assert _side_by_side({"workers": 1}) == ""
    assert _side_by_side({"workers": 2, "side_by_side": "runs"}) == (
        " trained in 2 worker processes")
    # on a GPU the runs train in the process; only their clusterings go to the workers
    assert "clustered in 5 worker processes" in _side_by_side(
        {"workers": 5, "side_by_side": "clustering"})
