"""Training defaults that the command line shows without importing torch."""

#: Early stopping is off by default (None): on DLPFC 151676 stopping where the loss flattens
#: (tol 0.01: ~160 epochs) cost ~0.1 ARI against the original's 1000 epochs (bench/README.md).
CONVERGENCE_TOL: float | None = None
#: epochs over which the early-stopping rule compares the loss
CONVERGENCE_WINDOW = 50
