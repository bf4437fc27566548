"""Training settings in one place: the recipes, read by the CLI, the Python API and summary.json.

Importing this module is cheap (no torch), so the command line can show the defaults in its
help without loading the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: Early stopping is off by default (None): on DLPFC 151676 stopping where the loss flattens
#: (tol 0.01: ~160 epochs) cost ~0.1 ARI against the original's 1000 epochs (bench/README.md).
CONVERGENCE_TOL: float | None = None
#: epochs over which the early-stopping rule compares the loss
CONVERGENCE_WINDOW = 50


@dataclass(frozen=True)
class Recipe:
    """How to train: model width, optimisation schedule, and how many runs vote on domains.

    Attributes
    ----------
    hidden_dim, latent_dim
        Widths of the attention layer and of the embedding.
    n_epochs, lr, lr_schedule
        Epochs of Adam per run, its learning rate, and ``"constant"`` or ``"cosine"``.
    weight_decay, gradient_clip
        Adam's L2 weight decay and the gradient-norm clip.
    n_runs
        Training runs with different seeds; with more than one, each run is clustered and the
        domains are the runs' majority vote (:func:`stagate.tl.consensus_domains`).
    cluster_inits
        mclust starts per clustering above 2000 spots (each from another random subset for
        the hierarchical initialisation), keeping the highest BIC; 1 is R's single start.
    """

    hidden_dim: int
    latent_dim: int
    n_epochs: int
    lr: float
    lr_schedule: str
    n_runs: int
    weight_decay: float = 1e-4
    gradient_clip: float = 5.0
    cluster_inits: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


#: name -> recipe. "paper" is the original's training (1000 epochs at a constant 1e-3, a
#: 512-wide attention layer, one run); "default" was chosen by measurement on the shared
#: labelled data (bench/README.md, "The default recipe").
RECIPES: dict[str, Recipe] = {
    "default": Recipe(hidden_dim=128, latent_dim=30, n_epochs=300, lr=2e-3,
                      lr_schedule="cosine", n_runs=5, cluster_inits=5),
    "paper": Recipe(hidden_dim=512, latent_dim=30, n_epochs=1000, lr=1e-3,
                    lr_schedule="constant", n_runs=1),
}
DEFAULT_RECIPE = "default"


def recipe(name: str) -> Recipe:
    """The recipe called `name`, or a clear error listing the known ones."""
    from ._errors import StagateInputError

    try:
        return RECIPES[name]
    except KeyError:
        msg = f"Unknown recipe {name!r}; choose one of {', '.join(RECIPES)}."
        raise StagateInputError(msg) from None


#: the recipe settings a caller may override one by one
TRAINING_SETTINGS = ("hidden_dim", "latent_dim", "n_epochs", "lr", "lr_schedule",
                     "weight_decay", "gradient_clip", "n_runs", "cluster_inits")


def resolve_training(name: str, **overrides) -> dict:
    """The recipe's settings with every override that is not None put in its place."""
    unknown = set(overrides) - set(TRAINING_SETTINGS)
    if unknown:
        msg = f"not recipe settings: {sorted(unknown)}"
        raise TypeError(msg)
    settings = recipe(name).as_dict()
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings
