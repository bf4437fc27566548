from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import stagate as sg


def test_protocol_on_counts(sim_raw):
    a = sim_raw.copy()
    sg.pp.preprocess(a, n_top_genes=100)
    assert a.n_vars == 100
    counts = a.layers["counts"]
    expected = np.log1p(counts.toarray() / counts.toarray().sum(1, keepdims=True) * 1e4)
    # totals were taken over all genes before subsetting
    totals = np.asarray(sim_raw.X.sum(1)).ravel()
    expected = np.log1p(counts.toarray() / totals[:, None] * 1e4)
    np.testing.assert_allclose(a.X.toarray(), expected, rtol=1e-5, atol=1e-5)
    assert sim_raw.n_vars == 200  # input untouched


def test_small_panel_keeps_all_genes(sim_raw):
    a = sim_raw.copy()
    sg.pp.preprocess(a)
    assert a.n_vars == sim_raw.n_vars and a.var["highly_variable"].all()


def test_normalised_data_rejected(sim_raw):
    a = sim_raw.copy()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    with pytest.raises(sg.StagateInputError, match="raw counts are required"):
        sg.pp.preprocess(a)


def test_negative_values_rejected(sim_raw):
    a = sim_raw.copy()
    x = a.X.toarray().astype(float)
    x[0, 0] = -1
    a.X = x
    with pytest.raises(sg.StagateInputError, match="negative"):
        sg.pp.preprocess(a)


def test_empty_spot_rejected(sim_raw):
    a = sim_raw.copy()
    x = a.X.toarray()
    x[2] = 0
    a.X = sp.csr_matrix(x)
    with pytest.raises(sg.StagateInputError, match="no counts"):
        sg.pp.preprocess(a)
