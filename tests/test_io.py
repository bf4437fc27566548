"""Readers: small but complete files in each platform's format, written here from the
documented schemas, read back; and each kind of malformed input."""

from __future__ import annotations

import gzip
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from click.testing import CliRunner
from matplotlib.image import imsave

import stagate as sg
from stagate.cli import cli

FAST = ["--epochs", "10", "--quiet", "--no-umap"]


def counts_and_grid(n_side=12, n_genes=40, seed=0):
    rng = np.random.default_rng(seed)
    n = n_side * n_side
    counts = rng.poisson(rng.gamma(1.0, 2.0, (1, n_genes)), (n, n_genes)).astype(np.int32)
    row, col = np.divmod(np.arange(n), n_side)
    barcodes = np.array([f"AAAC{i:06d}-1" for i in range(n)])
    genes = np.array([f"Gene{g}" for g in range(n_genes)])
    return counts, row, col, barcodes, genes


def write_10x_h5(path, counts, barcodes, genes, types=None):
    """Cell Ranger/Space Ranger v3 feature-barcode HDF5 (matrix stored genes x barcodes, CSC);
    `types` gives each feature's type (default: all "Gene Expression")."""
    m = sp.csc_matrix(counts.T)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = np.asarray(barcodes).astype("S")
        g["data"] = m.data.astype(np.int32)
        g["indices"] = m.indices.astype(np.int64)
        g["indptr"] = m.indptr.astype(np.int64)
        g["shape"] = np.array(m.shape, dtype=np.int32)
        feats = g.create_group("features")
        feats["id"] = np.array([f"ENSG{i:05d}" for i in range(len(genes))]).astype("S")
        feats["name"] = np.asarray(genes).astype("S")
        feats["feature_type"] = np.array(types or ["Gene Expression"] * len(genes)).astype("S")
        feats["genome"] = np.array(["GRCh38"] * len(genes)).astype("S")
        feats["_all_tag_keys"] = np.array([b"genome"])


def make_visium(root, *, old_positions=False, mtx=False, drop=None):
    counts, row, col, barcodes, genes = counts_and_grid()
    root.mkdir()
    if mtx:
        d = root / "filtered_feature_bc_matrix"
        d.mkdir()
        with gzip.open(d / "matrix.mtx.gz", "wb") as fh:
            scipy.io.mmwrite(fh, sp.coo_matrix(counts.T))
        pd.Series(barcodes).to_csv(d / "barcodes.tsv.gz", index=False, header=False)
        pd.DataFrame({"id": [f"ENSG{i:05d}" for i in range(len(genes))], "name": genes,
                      "type": "Gene Expression"}).to_csv(d / "features.tsv.gz", sep="\t",
                                                          index=False, header=False)
    else:
        write_10x_h5(root / "filtered_feature_bc_matrix.h5", counts, barcodes, genes)
    spatial = root / "spatial"
    spatial.mkdir()
    in_tissue = np.ones(len(barcodes), dtype=int)
    pos = pd.DataFrame({"barcode": barcodes, "in_tissue": in_tissue, "array_row": row,
                        "array_col": col * 2 + row % 2,
                        "pxl_row_in_fullres": 1000 + row * 120,
                        "pxl_col_in_fullres": 2000 + col * 138 + (row % 2) * 69})
    # spots outside the tissue are listed by Space Ranger too, but not in the filtered matrix
    extra = pos.iloc[:5].copy()
    extra["barcode"] = [f"TTTT{i:06d}-1" for i in range(5)]
    extra["in_tissue"] = 0
    pos = pd.concat([pos, extra])
    if drop is not None:
        pos = pos[pos.barcode != drop]
    if old_positions:
        pos.to_csv(spatial / "tissue_positions_list.csv", index=False, header=False)
    else:
        pos.to_csv(spatial / "tissue_positions.csv", index=False)
    (spatial / "scalefactors_json.json").write_text(json.dumps({
        "spot_diameter_fullres": 89.4, "tissue_hires_scalef": 0.15,
        "fiducial_diameter_fullres": 144.5, "tissue_lowres_scalef": 0.045}))
    imsave(spatial / "tissue_hires_image.png", np.random.default_rng(0).random((60, 50, 3)))
    imsave(spatial / "tissue_lowres_image.png", np.random.default_rng(1).random((20, 16, 3)))
    return counts, pos, barcodes, genes


@pytest.mark.parametrize(("old_positions", "mtx"), [(False, False), (True, False), (False, True)])
def test_visium_folder(tmp_path, old_positions, mtx):
    counts, pos, barcodes, genes = make_visium(tmp_path / "vis", old_positions=old_positions,
                                               mtx=mtx)
    assert sg.io.detect_format(tmp_path / "vis") == "visium"
    a = sg.io.read(tmp_path / "vis")
    assert list(a.obs_names) == list(barcodes) and list(a.var_names) == list(genes)
    np.testing.assert_array_equal(a.X.toarray(), counts)
    p = pos.set_index("barcode").loc[barcodes]
    np.testing.assert_allclose(a.obsm["spatial"], p[["pxl_col_in_fullres",
                                                     "pxl_row_in_fullres"]].to_numpy())
    lib = a.uns["spatial"]["vis"]
    assert lib["images"]["hires"].shape[:2] == (60, 50)
    assert lib["scalefactors"]["tissue_hires_scalef"] == 0.15
    assert a.uns["stagate_input"]["um_per_unit"] == pytest.approx(65 / 89.4)


def test_visium_errors(tmp_path):
    make_visium(tmp_path / "a")
    (tmp_path / "a" / "spatial" / "scalefactors_json.json").unlink()
    with pytest.raises(sg.StagateInputError, match="scalefactors_json.json"):
        sg.io.read(tmp_path / "a")
    _, _, barcodes, _ = make_visium(tmp_path / "b", drop="AAAC000003-1")
    with pytest.raises(sg.StagateInputError, match="1 of 144 barcodes.*not listed"):
        sg.io.read(tmp_path / "b")
    make_visium(tmp_path / "c")
    (tmp_path / "c" / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(sg.StagateInputError, match="missing the count matrix"):
        sg.io.read(tmp_path / "c")
    make_visium(tmp_path / "d")
    f = tmp_path / "d" / "spatial" / "tissue_positions.csv"
    df = pd.read_csv(f).astype({"pxl_row_in_fullres": object})
    df.loc[3, "pxl_row_in_fullres"] = "abc"
    df.to_csv(f, index=False)
    with pytest.raises(sg.StagateInputError, match="non-numeric coordinates"):
        sg.io.read(tmp_path / "d")
    make_visium(tmp_path / "e")
    f = tmp_path / "e" / "spatial" / "tissue_positions.csv"
    df = pd.read_csv(f)
    df.loc[4, "barcode"] = df.loc[5, "barcode"]
    df.to_csv(f, index=False)
    with pytest.raises(sg.StagateInputError, match="duplicated barcodes"):
        sg.io.read(tmp_path / "e")


def write_gem(path, records, *, columns=("geneID", "x", "y", "MIDCount")):
    header = "#FileFormat=GEMv0.1\n#SortedBy=None\n#BinSize=1\n#OffsetX=0\n#OffsetY=0\n"
    body = "\t".join(columns) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in records)
    with gzip.open(path, "wt") as fh:
        fh.write(header + body)


def gem_records(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    genes = rng.choice([f"G{i}" for i in range(30)], n)
    x, y = rng.integers(0, 1000, n), rng.integers(0, 800, n)
    return list(zip(genes, x, y, rng.integers(1, 4, n), strict=True))


def test_stereoseq_gem_binning(tmp_path):
    recs = gem_records()
    write_gem(tmp_path / "s.gem.gz", recs)
    assert sg.io.detect_format(tmp_path / "s.gem.gz") == "stereoseq"
    a = sg.io.read(tmp_path / "s.gem.gz", bin_size=100)
    df = pd.DataFrame(recs, columns=["g", "x", "y", "c"])
    assert a.X.sum() == df.c.sum()
    sel = (df.x // 100 == 3) & (df.y // 100 == 2) & (df.g == "G5")
    name = "bin100_3_2"
    assert a[name, "G5"].X.toarray().item() == df.c[sel].sum()
    np.testing.assert_allclose(a[name].obsm["spatial"], [[350, 250]])
    assert a.uns["stagate_input"]["unit"] == "DNB" and a.uns["stagate_input"]["um_per_unit"] == 0.5


def test_stereoseq_errors(tmp_path):
    write_gem(tmp_path / "a.gem.gz", [r[:3] for r in gem_records()], columns=("geneID", "x", "y"))
    with pytest.raises(sg.StagateInputError, match=r"missing column\(s\) \['MIDCount'\]"):
        sg.io.read(tmp_path / "a.gem.gz")
    recs = gem_records()
    recs[10] = (recs[10][0], recs[10][1], recs[10][2], -2)
    write_gem(tmp_path / "b.gem.gz", recs)
    with pytest.raises(sg.StagateInputError, match="non-negative integer"):
        sg.io.read(tmp_path / "b.gem.gz")
    write_gem(tmp_path / "c.gem.gz", gem_records(n=20000))
    data = (tmp_path / "c.gem.gz").read_bytes()
    (tmp_path / "t.gem.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(sg.StagateInputError, match="truncated or corrupt"):
        sg.io.read(tmp_path / "t.gem.gz")


def test_slideseq_folder_and_digital_expression(tmp_path):
    counts, row, col, barcodes, genes = counts_and_grid(seed=2)
    d = tmp_path / "slide"
    d.mkdir()
    # Drop-seq digital expression: genes as rows, first column GENE
    dge = pd.DataFrame(counts.T, index=pd.Index(genes, name="GENE"), columns=barcodes)
    dge.to_csv(d / "sample.digital_expression.txt.gz", sep="\t")
    pd.DataFrame({"barcodes": barcodes[::-1], "xcoord": col[::-1] * 10.0,
                  "ycoord": row[::-1] * 10.0}).to_csv(d / "BeadLocations.csv", index=False)
    assert sg.io.detect_format(d) == "slideseq"
    a = sg.io.read(d)
    np.testing.assert_array_equal(a.X.toarray(), counts)
    np.testing.assert_allclose(a.obsm["spatial"], np.column_stack([col, row]) * 10.0)
    assert a.uns["stagate_input"]["unit"] == "um"


def test_imaging_tables_with_z(tmp_path):
    counts, row, col, barcodes, genes = counts_and_grid(seed=3)
    cells = np.array([f"cell{i}" for i in range(len(barcodes))])
    pd.DataFrame(counts, index=pd.Index(cells, name="cell"), columns=genes).to_csv(
        tmp_path / "counts.csv")
    pd.DataFrame({"cell": cells, "x": col * 20.0, "y": row * 20.0, "z": row % 3}).to_csv(
        tmp_path / "cell_coordinates.csv", index=False)
    a = sg.io.read(tmp_path / "counts.csv", "imaging",
                   coordinates=tmp_path / "cell_coordinates.csv")
    assert a.obsm["spatial"].shape == (len(cells), 2)
    a3 = sg.io.read_imaging(tmp_path / "counts.csv", tmp_path / "cell_coordinates.csv", z="z")
    assert a3.obsm["spatial"].shape == (len(cells), 3)
    # counts that are not counts, and coordinates that do not match
    bad = pd.DataFrame(counts / 3.0, index=pd.Index(cells, name="cell"), columns=genes)
    bad.to_csv(tmp_path / "norm.csv")
    with pytest.raises(sg.StagateInputError, match="norm.csv.*non-integer"):
        sg.io.read_imaging(tmp_path / "norm.csv", tmp_path / "cell_coordinates.csv")
    pd.DataFrame({"cell": cells[:-2], "x": 1.0, "y": 2.0}).to_csv(tmp_path / "few.csv",
                                                                   index=False)
    with pytest.raises(sg.StagateInputError, match="2 of 144 barcodes"):
        sg.io.read_imaging(tmp_path / "counts.csv", tmp_path / "few.csv")
    pd.DataFrame(index=pd.Index([], name="cell")).to_csv(tmp_path / "empty.csv")
    with pytest.raises(sg.StagateInputError, match="empty"):
        sg.io.read_imaging(tmp_path / "empty.csv", tmp_path / "cell_coordinates.csv")


def test_h5ad_coordinates_from_obs_columns(tmp_path, sim_raw):
    a = sim_raw.copy()
    a.obs["x_centroid"], a.obs["y_centroid"] = a.obsm["spatial"].T
    del a.obsm["spatial"]
    a.write_h5ad(tmp_path / "a.h5ad")
    b = sg.io.read(tmp_path / "a.h5ad")
    np.testing.assert_allclose(b.obsm["spatial"], sim_raw.obsm["spatial"])
    before = (tmp_path / "a.h5ad").read_bytes()
    sg.io.read(tmp_path / "a.h5ad")
    assert (tmp_path / "a.h5ad").read_bytes() == before  # inputs are never modified


def test_cli_on_visium_folder_and_gem(tmp_path):
    make_visium(tmp_path / "vis")
    out = tmp_path / "o1"
    res = CliRunner().invoke(cli, ["run", str(tmp_path / "vis"), "--n-domains", "3",
                                   "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"]["format"] == "visium"
    assert summary["input"]["um_per_unit"] == pytest.approx(65 / 89.4)
    assert summary["mean_neighbors"] > 4
    write_gem(tmp_path / "s.gem.gz", gem_records(n=20000))
    out = tmp_path / "o2"
    res = CliRunner().invoke(cli, ["run", str(tmp_path / "s.gem.gz"), "--bin-size", "100",
                                   "--n-domains", "3", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["input"]["coordinate_unit"] == "DNB"


def test_cli_bad_gem_one_line(tmp_path):
    write_gem(tmp_path / "a.gem.gz", [r[:3] for r in gem_records()], columns=("geneID", "x", "y"))
    res = CliRunner().invoke(cli, ["run", str(tmp_path / "a.gem.gz"), "--n-domains", "3",
                                   "--out", str(tmp_path / "o"), *FAST])
    assert res.exit_code == 1 and "a.gem.gz: not a GEM file" in res.output
    assert "Traceback" not in res.output


def test_domain_map_over_the_tissue_image(tmp_path):
    make_visium(tmp_path / "vis")
    a = sg.io.read(tmp_path / "vis")
    a.obs["domain"] = pd.Categorical(np.where(a.obsm["spatial"][:, 0] > 2800, "1", "2"))
    ax = sg.pl.domains(a)
    assert len(ax.images) == 1 and ax.get_ylim()[0] > ax.get_ylim()[1]  # y points down
    assert len(sg.pl.domains(a, image=None).images) == 0


def test_stereopy_h5ad_is_recognised(tmp_path, sim_raw):
    a = sim_raw.copy()
    a.uns["bin_size"] = 50
    a.uns["bin_type"] = "bins"
    a.write_h5ad(tmp_path / "stereo.h5ad")
    b = sg.io.read(tmp_path / "stereo.h5ad")
    assert b.uns["stagate_input"]["format"] == "stereoseq-h5ad"
    assert b.uns["stagate_input"]["unit"] == "DNB" and b.uns["stagate_input"]["bin_size"] == 50


def test_nan_coordinates_in_positions(tmp_path):
    make_visium(tmp_path / "v")
    f = tmp_path / "v" / "spatial" / "tissue_positions.csv"
    df = pd.read_csv(f).astype({"pxl_col_in_fullres": float})
    df.loc[7, "pxl_col_in_fullres"] = np.nan
    df.to_csv(f, index=False)
    with pytest.raises(sg.StagateInputError, match="tissue_positions.csv: missing \\(NaN\\)"):
        sg.io.read(tmp_path / "v")
