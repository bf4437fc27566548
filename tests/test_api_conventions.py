"""scanpy's package-structure rules: <= 3 positional parameters, `copy` keyword-only False."""

from __future__ import annotations

import inspect

import pytest

import stagate as sg

FUNCS = [getattr(mod, name) for mod in (sg.pp, sg.tl) for name in mod.__all__]


@pytest.mark.parametrize("func", FUNCS, ids=lambda f: f.__qualname__)
def test_signature(func):
    params = inspect.signature(func).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3
    if "copy" in inspect.signature(func).parameters:
        copy = inspect.signature(func).parameters["copy"]
        assert copy.kind is copy.KEYWORD_ONLY and copy.default is False


@pytest.mark.parametrize("func", FUNCS, ids=lambda f: f.__qualname__)
def test_numpydoc(func):
    doc = inspect.getdoc(func)
    assert doc and "Parameters\n----------" in doc
    shared = ("adata", "copy", "library_key", "spatial_key", "random_state")
    assert not [n for n in shared if "{" + n + "}" in doc]  # shared texts filled in


def test_importing_stagate_keeps_the_users_matplotlib_backend():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import stagate, stagate.pl; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "svg"


def test_the_command_line_starts_without_torch_or_scanpy():
    """`stagate -h`, `--version` and bad options answer at once: the heavy modules are
    imported only where they are used."""
    import subprocess
    import sys

    code = ("import sys, stagate, stagate.cli; "
            "print(sorted(m for m in ('torch', 'scanpy', 'numba', 'anndata') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_every_plot_returns_its_axes(sim):
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.axes import Axes

    sg.tl.stagate(sim, n_epochs=3, hidden_dim=16, latent_dim=4, show_progress=False)
    sg.tl.domains(sim, 3)
    results = [sg.pl.domains(sim), sg.pl.loss(sim), sg.pl.neighbors_histogram(sim),
               sg.pl.attention(sim, 0), sg.pl.genes(sim, list(sim.var_names[:2]))]
    for r in results:
        assert all(isinstance(ax, Axes) for ax in np.ravel(r))
    plt.close("all")
