from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import stagate as sg

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_file(name: str) -> Path:
    """Path of a shared dataset; skip the test with the reason when it is not there."""
    path = DATA / name / f"{name}.h5ad"
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (needs ../shared/data)")
    return path


@pytest.fixture(scope="session")
def sim_raw():
    """A small simulated section with raw counts (never modified by tests: copy it)."""
    return sg.datasets.simulate(400, n_genes=200, n_domains=4, random_state=1)


@pytest.fixture
def sim(sim_raw):
    """Preprocessed copy with its spatial network."""
    a = sim_raw.copy()
    sg.pp.preprocess(a)
    sg.pp.spatial_network(a)
    return a


@pytest.fixture
def rng():
    return np.random.default_rng(0)
