"""The command line end to end on the simulator, and its exit codes."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pytest
from click.testing import CliRunner

from stagate.cli import cli

FAST = ["--epochs", "15", "--quiet", "--no-umap"]


@pytest.fixture
def h5ad(sim_raw, tmp_path):
    path = tmp_path / "in.h5ad"
    sim_raw.write_h5ad(path)
    return path


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(cli, ["demo", "--n-spots", "300", "--n-domains", "3",
                                   "--epochs", "20", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "non-spatial" in res.output and "STAGATE ARI" in res.output
    summary = json.loads((out / "summary.json").read_text())
    for key in ("n_spots", "n_genes_used", "mean_neighbors", "seed", "device", "version",
                "ari", "nmi", "nonspatial_ari"):
        assert key in summary
    assert set(summary["seconds"]) >= {"graph", "train", "cluster", "total"}
    # the heaviest PAGA path runs through every domain; over the simulated truth's groups too
    assert sorted(summary["paga"]["path"]) == ["1", "2", "3"]
    assert len(summary["paga"]["path_main_label"]) == 3
    assert sorted(summary["paga"]["label_path"]) == sorted(
        anndata.read_h5ad(out / "stagate.h5ad").obs["domain_truth"].astype(str).unique())
    for f in ("stagate.h5ad", "domains.png", "umap.png"):
        assert (out / f).stat().st_size > 0


def test_run_writes_results_and_is_reproducible(h5ad, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--label-key",
                                       "domain_truth", "--out", str(out), *FAST])
        assert res.exit_code == 0, res.output
        outs.append(anndata.read_h5ad(out / "stagate.h5ad"))
    a, b = outs
    assert a.obs["domain"].nunique() == 4
    np.testing.assert_array_equal(a.obsm["STAGATE"], b.obsm["STAGATE"])
    assert {"STAGATE_ReX"} <= set(a.layers) and "STAGATE_attention" in a.obsp
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert 0 <= summary["ari"] <= 1


def bad(sim_raw, tmp_path, what):
    a = sim_raw.copy()
    if what == "no_coords":
        del a.obsm["spatial"]
    elif what == "nan":
        a.obsm["spatial"][0, 1] = np.nan
    elif what == "normalised":
        a.X = np.log1p(a.X.toarray()).astype(np.float32)
    path = tmp_path / f"{what}.h5ad"
    a.write_h5ad(path)
    return path


@pytest.mark.parametrize(
    ("what", "extra", "message"),
    [
        ("no_coords", [], "No spot coordinates"),
        ("nan", [], "NaN or infinite coordinates"),
        ("normalised", [], "raw counts are required"),
        (None, ["--radius", "0.001"], "every spot is isolated"),
        (None, ["--n-domains", "100000"], "must be <= the number of spots"),
    ],
)
def test_bad_input_one_line_exit_1_nothing_written(sim_raw, h5ad, tmp_path, what, extra,
                                                     message):
    path = bad(sim_raw, tmp_path, what) if what else h5ad
    out = tmp_path / "out"
    args = ["run", str(path), "--out", str(out), *FAST]
    if "--n-domains" not in extra:
        args += ["--n-domains", "4"]
    res = CliRunner().invoke(cli, args + extra)
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists() or not any(out.iterdir())


def test_existing_results_need_force(h5ad, tmp_path):
    out = tmp_path / "out"
    args = ["run", str(h5ad), "--n-domains", "4", "--out", str(out), *FAST]
    assert CliRunner().invoke(cli, args).exit_code == 0
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "--force" in res.output
    assert CliRunner().invoke(cli, [*args, "--force"]).exit_code == 0


def test_usage_errors_exit_2(h5ad, tmp_path):
    res = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--out",
                                   str(tmp_path / "o"), "--radius", "5", "--n-neighbors", "3"])
    assert res.exit_code == 2
    assert CliRunner().invoke(cli, ["run", str(h5ad), "--out", "x"]).exit_code == 2
    assert CliRunner().invoke(cli, ["run", str(tmp_path / "missing.h5ad"), "--n-domains", "2",
                                    "--out", "x"]).exit_code == 2


def test_not_an_h5ad(tmp_path):
    p = tmp_path / "x.h5ad"
    p.write_text("hello")
    res = CliRunner().invoke(cli, ["run", str(p), "--n-domains", "2", "--out",
                                   str(tmp_path / "o")])
    assert res.exit_code == 1 and "not an HDF5" in res.output


def test_version_and_help():
    assert CliRunner().invoke(cli, ["-V"]).exit_code == 0
    res = CliRunner().invoke(cli, ["run", "-h"])
    assert res.exit_code == 0 and "--n-domains" in res.output


def test_log_normalised_input_runs_with_flag(sim_raw, tmp_path):
    a = sim_raw.copy()
    a.X = np.log1p(a.X.toarray()).astype(np.float32)
    path = tmp_path / "norm.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "3", "--log-normalised",
                                   "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["n_genes_used"] == a.n_vars


def test_minibatch_option(h5ad, tmp_path):
    out = tmp_path / "mb"
    res = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--batch-size", "150",
                                   "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["config"]["batch_size"] == 150
    bad = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--batch-size", "x",
                                   "--out", str(out)])
    assert bad.exit_code == 2


def test_checkpoint_resume_from_the_command_line(h5ad, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    # the paper recipe (constant learning rate): a longer budget trains on from the checkpoint
    base = ["run", str(h5ad), "--n-domains", "4", "--quiet", "--no-umap", "--no-report",
            "--recipe", "paper", "--checkpoint", str(ckpt)]
    assert CliRunner().invoke(cli, [*base, "--epochs", "6", "--out", str(tmp_path / "a")]
                              ).exit_code == 0
    assert ckpt.exists()
    res = CliRunner().invoke(cli, [*base, "--epochs", "10", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    full = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--quiet",
                                    "--no-umap", "--no-report", "--recipe", "paper",
                                    "--epochs", "10", "--out", str(tmp_path / "c")])
    assert full.exit_code == 0
    a = anndata.read_h5ad(tmp_path / "b" / "stagate.h5ad")
    b = anndata.read_h5ad(tmp_path / "c" / "stagate.h5ad")
    np.testing.assert_array_equal(a.obsm["STAGATE"], b.obsm["STAGATE"])
    # the default recipe: each voting run keeps its own file; a rerun resumes all of them
    votes = ["run", str(h5ad), "--n-domains", "4", "--quiet", "--no-umap", "--no-report",
             "--epochs", "8", "--runs", "2", "--checkpoint", str(tmp_path / "v.pt")]
    assert CliRunner().invoke(cli, [*votes, "--out", str(tmp_path / "d")]).exit_code == 0
    assert (tmp_path / "v.run0.pt").exists() and (tmp_path / "v.run1.pt").exists()
    assert CliRunner().invoke(cli, [*votes, "--out", str(tmp_path / "e")]).exit_code == 0
    d = anndata.read_h5ad(tmp_path / "d" / "stagate.h5ad")
    e = anndata.read_h5ad(tmp_path / "e" / "stagate.h5ad")
    np.testing.assert_array_equal(d.obs["domain"], e.obs["domain"])


def test_a_checkpoint_of_another_run_is_refused(h5ad, sim_raw, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    base = ["run", "--n-domains", "4", "--quiet", "--no-umap", "--no-report", "--epochs", "4",
            "--recipe", "paper", "--checkpoint", str(ckpt)]
    assert CliRunner().invoke(cli, [*base, str(h5ad), "--out", str(tmp_path / "a")]
                              ).exit_code == 0
    other = sim_raw.copy()
    other.X = other.X.copy()
    other.X.data[0] += 1  # the same genes and spots, one count different
    other_path = tmp_path / "other.h5ad"
    other.write_h5ad(other_path)
    for extra, what in ((["--seed", "1", str(h5ad)], "random_state"),
                        ([str(other_path)], "data_hash"),
                        (["--lr", "0.01", str(h5ad)], "lr")):
        out = tmp_path / "x"
        res = CliRunner().invoke(cli, [*base, *extra, "--out", str(out)])
        assert res.exit_code == 1 and "belongs to another run" in res.output, res.output
        assert what in res.output and "Traceback" not in res.output and not out.exists()
    ckpt.write_bytes(b"not a checkpoint")
    res = CliRunner().invoke(cli, [*base, str(h5ad), "--out", str(tmp_path / "y")])
    assert res.exit_code == 1 and "cannot be read" in res.output


def test_refine_and_early_stopping_options(h5ad, tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--label-key",
                                   "domain_truth", "--refine", "--tol", "0.5", "--epochs", "200",
                                   "--quiet", "--no-umap", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert 50 < summary["epochs_trained"] < 200  # the 50-epoch window, then the rule stops it
    assert 0 <= summary["ari_refined"] <= 1
    a = anndata.read_h5ad(out / "stagate.h5ad")
    assert set(a.obs["domain_refined"].unique()) <= set(a.obs["domain"].unique())


def test_out_is_checked_before_any_work(h5ad, tmp_path):
    out = tmp_path / "done"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    res = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--out", str(out),
                                   "--epochs", "100000", *FAST[2:]])  # would take hours
    assert res.exit_code == 1 and "already holds results" in res.output
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where the output's parent folder should be
    res = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--out",
                                   str(blocker / "x"), "--epochs", "100000", *FAST[2:]])
    assert res.exit_code == 1 and "Cannot write results" in res.output, res.output
    assert "Traceback" not in res.output


def test_force_replaces_the_results_as_a_whole(h5ad, tmp_path):
    out = tmp_path / "o"
    base = ["run", str(h5ad), "--n-domains", "4", "--epochs", "3", "--quiet", "--out", str(out)]
    assert CliRunner().invoke(cli, base).exit_code == 0
    assert (out / "umap.png").exists()
    (out / "notes.txt").write_text("mine")  # not a result: left alone
    res = CliRunner().invoke(cli, [*base, "--force", "--no-umap"])
    assert res.exit_code == 0, res.output
    assert not (out / "umap.png").exists() and (out / "notes.txt").read_text() == "mine"
    assert "umap.png" not in res.output


def test_a_folder_being_written_is_refused(h5ad, tmp_path):
    from stagate._pipeline import claim_output_folder

    out = tmp_path / "busy"
    held = claim_output_folder(out)
    try:
        res = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--out", str(out),
                                       *FAST])
        assert res.exit_code == 1 and "Another stagate run is writing" in res.output
    finally:
        held.close()


def test_an_empty_file_says_it_has_no_spots(sim_raw, tmp_path):
    path = tmp_path / "empty.h5ad"
    sim_raw[:0].copy().write_h5ad(path)
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "3", "--out",
                                   str(tmp_path / "o"), *FAST])
    assert res.exit_code == 1 and "no spots" in res.output, res.output


def test_empty_spots_are_refused_or_dropped_with_min_counts(sim_raw, tmp_path):
    a = sim_raw.copy()
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.array(a.X)
    x[:4] = 0  # four spots with no counts (imaging segmentations have them)
    x[4, :] = 0
    x[4, 0] = 1  # one count: kept by --min-counts 1
    a.X = x
    path = tmp_path / "in.h5ad"
    a.write_h5ad(path)
    before = path.read_bytes()
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "3", "--out",
                                   str(tmp_path / "o"), *FAST])
    assert res.exit_code == 1 and "--min-counts 1" in res.output, res.output
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "3", "--min-counts", "1",
                                   "--out", str(tmp_path / "o"), *FAST])
    assert res.exit_code == 0, res.output
    out = anndata.read_h5ad(tmp_path / "o" / "stagate.h5ad")
    assert out.n_obs == a.n_obs - 4 and a.obs_names[4] in out.obs_names
    assert path.read_bytes() == before  # the input is never modified
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "3", "--min-counts",
                                   "10000000", "--out", str(tmp_path / "o2"), *FAST])
    assert res.exit_code == 1 and "lower --min-counts" in res.output, res.output


@pytest.mark.parametrize("args, match", [
    (["--radius", "-5"], "--radius must be a positive number"),
    (["--radius", "0"], "--radius must be a positive number"),
    (["--epochs", "0"], "--epochs"),
    (["--n-domains", "1"], "--n-domains"),
    (["--n-domains", "100000"], "must be <= the number of spots"),
    (["--label-key", "one_class"], "has one class"),
    (["--label-key", "all_na"], "has no annotated spot"),
    (["--device", "cuda"], "no CUDA GPU is visible"),
])
def test_wrong_values_end_in_one_line(sim_raw, tmp_path, args, match):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    a = sim_raw.copy()
    a.obs["one_class"] = "L1"
    a.obs["all_na"] = "NA"
    path = tmp_path / "in.h5ad"
    a.write_h5ad(path)
    base = ["run", str(path), "--out", str(tmp_path / "o"), "--epochs", "2", "--quiet",
            "--no-umap"]
    if "--n-domains" not in args:
        base += ["--n-domains", "3"]
    res = CliRunner().invoke(cli, [*base, *args])
    assert res.exit_code in (1, 2) and match in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicate_gene_names_are_named(sim_raw, tmp_path):
    a = sim_raw.copy()
    a.var_names = ["g0"] * 2 + list(a.var_names[2:])
    path = tmp_path / "in.h5ad"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(path)
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "3", "--out",
                                   str(tmp_path / "o"), *FAST])
    assert res.exit_code == 1 and "Gene names are duplicated" in res.output, res.output


@pytest.mark.parametrize("what", ["1-D", "4 columns"])
def test_coordinates_of_the_wrong_shape_are_named(sim_raw, tmp_path, what):
    a = sim_raw.copy()
    xy = a.obsm["spatial"]
    a.obsm["spatial"] = np.column_stack([xy, xy]) if what == "4 columns" else xy[:, :1]
    path = tmp_path / "in.h5ad"
    a.write_h5ad(path)
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "3", "--out",
                                   str(tmp_path / "o"), *FAST])
    assert res.exit_code == 1 and "expected (n_spots, 2) or (n_spots, 3)" in res.output


@pytest.mark.parametrize("what", ["integer-valued floats", "explicit zeros"])
def test_counts_stored_unusually_are_accepted(sim_raw, tmp_path, what):
    import scipy.sparse as sp

    a = sim_raw.copy()
    if what == "integer-valued floats":
        a.X = a.X.toarray().astype(np.float64)
    else:
        x = sp.csr_matrix(a.X, dtype=np.float32)
        x.data[::3] = 0  # stored entries that are zero
        a.X = x
    path = tmp_path / "in.h5ad"
    a.write_h5ad(path)
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "3", "--out",
                                   str(tmp_path / "o"), *FAST])
    assert res.exit_code == 0, res.output


def test_a_damaged_tissue_image_is_a_warning(tmp_path, caplog):
    import stagate as sg

    from .test_io import make_visium

    folder = tmp_path / "slide"
    make_visium(folder)
    (folder / "spatial" / "tissue_hires_image.png").write_bytes(b"not a png")
    a = sg.io.read(folder)
    assert "cannot be read" in caplog.text
    assert "hires" not in a.uns["spatial"]["slide"]["images"]


def test_an_input_column_named_domain_is_kept_and_still_scored(sim_raw, tmp_path):
    a = sim_raw.copy()
    a.obs["domain"] = a.obs["domain_truth"]
    path = tmp_path / "in.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "4", "--label-key",
                                   "domain", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    result = anndata.read_h5ad(out / "stagate.h5ad")
    assert (result.obs["domain_input"] == a.obs["domain_truth"].to_numpy()).all()
    assert json.loads((out / "summary.json").read_text())["ari"] < 0.999  # not self-scored


def test_disk_full_while_writing_leaves_earlier_results(h5ad, tmp_path, monkeypatch):
    import errno

    import anndata as ad_module

    out = tmp_path / "o"
    base = ["run", str(h5ad), "--n-domains", "4", "--out", str(out), *FAST]
    assert CliRunner().invoke(cli, base).exit_code == 0
    before = (out / "summary.json").read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ad_module.AnnData, "write_h5ad", full)
    res = CliRunner().invoke(cli, [*base, "--force", "--seed", "3"])
    assert res.exit_code == 1 and "No space left on device" in res.output, res.output
    assert "Traceback" not in res.output
    assert (out / "summary.json").read_text() == before  # the earlier run's results stand
    assert not list(tmp_path.glob(".o.stagate-tmp-*"))


def test_a_failing_optional_stage_keeps_the_domains(h5ad, tmp_path, monkeypatch):
    """UMAP or the report failing after training must not cost the run its results."""
    import stagate
    import stagate.report

    def broken(*args, **kwargs):
        msg = "simulated failure"
        raise RuntimeError(msg)

    monkeypatch.setattr(stagate.tl, "embedding_umap", broken)
    monkeypatch.setattr(stagate.report, "write_report", broken)
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["run", str(h5ad), "--n-domains", "4", "--epochs", "15",
                                   "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "optional umap stage failed (RuntimeError: simulated failure)" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["failed_stages"]) == {"umap", "report"}
    assert "paga" not in summary and "downstream" in summary  # markers still ran
    result = anndata.read_h5ad(out / "stagate.h5ad")
    assert result.obs["domain"].nunique() == 4 and "STAGATE_umap" not in result.obsm
    assert (out / "markers.csv").exists()
    assert not (out / "report.html").exists() and not (out / "umap.png").exists()
