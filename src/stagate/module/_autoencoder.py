"""STAGATE's graph attention auto-encoder: encoder and decoder share W1, W2 and the attention."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._graph import NeighbourGraph
from ._layers import TiedGATLayer
from ._sparse import aggregate, sparse_input_product


@dataclass
class EncoderOutput:
    """What the encoder computes and the decoder and loss reuse.

    ``xw`` is ``X W1`` (N, hidden), ``z`` the embedding (N, latent), ``alpha`` the attention
    (E,) used by both encoder and decoder.
    """

    xw: Tensor
    z: Tensor
    alpha: Tensor


class _GramInner(torch.autograd.Function):
    """``<A^T A, B^T B>`` with the backward that uses the symmetry of both Gram matrices.

    Autograd would differentiate ``A^T @ A`` as a product of two inputs, two (N, F, F)
    products per Gram matrix; with ``S = B^T B`` symmetric the gradient is simply
    ``2 A S`` (and ``2 B (A^T A)`` for B): one product each, a third of an epoch's
    dense work saved on a Visium slice.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        gram_a, gram_b = a.T @ a, b.T @ b
        ctx.save_for_backward(a, b, gram_a, gram_b)
        return (gram_a * gram_b).sum(dtype=torch.float64)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        a, b, gram_a, gram_b = ctx.saved_tensors
        scale = (2 * grad).to(a.dtype)
        grad_a = a @ (gram_b * scale) if ctx.needs_input_grad[0] else None
        grad_b = b @ (gram_a * scale) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def gram_inner(a: Tensor, b: Tensor) -> Tensor:
    """``sum((a^T a) * (b^T b)) = ||a b^T||_F^2`` in float64, differentiable in both."""
    return _GramInner.apply(a, b)


class STAGATEModule(nn.Module):
    r"""Graph attention auto-encoder with truly tied weights (METHOD.md section 3).

    .. math::
        H = X W_1,\quad H_1 = \mathrm{ELU}(A H),\quad Z = H_1 W_2,\quad
        H_3 = \mathrm{ELU}(A Z W_2^\top),\quad \hat X = H_3 W_1^\top

    with :math:`A` the attention matrix of :class:`TiedGATLayer` computed on :math:`H`.
    The decoder uses the very parameters ``W1`` and ``W2`` (not copies), so the
    reconstruction error's gradient reaches the encoder's weights through both paths.

    Cell type-aware module: with ``alpha_mix > 0`` a second attention on a pruned graph is
    mixed in, :math:`A = (1-\alpha) A_{spatial} + \alpha A_{pruned}`. The pruned graph must be
    a subgraph of the spatial one (same self-loops).

    Parameters
    ----------
    n_genes
        Input width G.
    hidden_dim
        Width of the attention layer (512 in the paper; the recipes set it).
    latent_dim
        Width of the embedding (30 in the paper).
    alpha_mix
        Weight of the pruned-graph attention; 0 disables the cell type-aware module.
    """

    def __init__(
        self, n_genes: int, hidden_dim: int, latent_dim: int, alpha_mix: float = 0.0
    ) -> None:
        super().__init__()
        self.n_genes, self.hidden_dim, self.latent_dim = n_genes, hidden_dim, latent_dim
        self.alpha_mix = float(alpha_mix)
        self.W1 = nn.Parameter(torch.empty(n_genes, hidden_dim))
        self.W2 = nn.Parameter(torch.empty(hidden_dim, latent_dim))
        self.att = TiedGATLayer(hidden_dim)
        if self.alpha_mix > 0:
            self.att_pruned = TiedGATLayer(hidden_dim)
        else:
            self.register_module("att_pruned", None)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for w in (self.W1, self.W2):  # glorot, as PyG's Linear in the original
            bound = math.sqrt(6.0 / sum(w.shape))
            nn.init.uniform_(w, -bound, bound, generator=generator)
        self.att.reset_parameters(generator)
        if self.att_pruned is not None:
            self.att_pruned.reset_parameters(generator)

    # -- attention -----------------------------------------------------------------------------
    def attention(
        self, h: Tensor, graph: NeighbourGraph, pruned_edges: Tensor | None = None,
        pruned_graph: NeighbourGraph | None = None,
    ) -> Tensor:
        """Attention (E,) on `graph`'s edges, mixed with the pruned graph's when enabled.

        `pruned_edges` (E_p,) are the positions in `graph`'s edge order of `pruned_graph`'s edges.
        """
        alpha = self.att.attention(h, graph)
        if self.att_pruned is None:
            return alpha
        if pruned_graph is None or pruned_edges is None:
            msg = "alpha_mix > 0 needs the pruned graph (run stagate.pp.prune_network first)."
            raise ValueError(msg)
        alpha_p = torch.zeros_like(alpha).index_copy(
            0, pruned_edges, self.att_pruned.attention(h, pruned_graph)
        )
        return (1 - self.alpha_mix) * alpha + self.alpha_mix * alpha_p

    # -- encoder / decoder ---------------------------------------------------------------------
    def encode(
        self, x: Tensor, graph: NeighbourGraph, *, x_t: Tensor | None = None, **pruned
    ) -> EncoderOutput:
        """``X -> Z`` (N, latent); keeps ``X W1`` and the attention for the decoder.

        `x` may be dense or sparse CSR; for CSR, pass its transpose `x_t` to save work.
        """
        xw = x @ self.W1 if x_t is None else sparse_input_product(x, x_t, self.W1)
        alpha = self.attention(xw, graph, **pruned)
        h1 = F.elu(aggregate(alpha, xw, graph))
        z = h1 @ self.W2
        return EncoderOutput(xw=xw, z=z, alpha=alpha)

    def decode_hidden(self, enc: EncoderOutput, graph: NeighbourGraph) -> Tensor:
        """``H3 = ELU(A Z W2^T)`` (N, hidden), with the encoder's attention."""
        return F.elu(aggregate(enc.alpha, enc.z @ self.W2.T, graph))

    def reconstruct(self, h3: Tensor) -> Tensor:
        """``X_hat = H3 W1^T`` (N, G)."""
        return h3 @ self.W1.T

    def forward(self, x: Tensor, graph: NeighbourGraph, **pruned) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(z, x_hat, alpha)``."""
        enc = self.encode(x, graph, **pruned)
        return enc.z, self.reconstruct(self.decode_hidden(enc, graph)), enc.alpha

    # -- loss ----------------------------------------------------------------------------------
    def sum_squared_error(
        self, x_sq: Tensor, xw: Tensor, h3: Tensor, *, rows: Tensor | slice = slice(None)
    ) -> Tensor:
        r"""``||X - H3 W1^T||^2`` over `rows`, without forming the reconstruction.

        .. math:: \|X - H_3 W_1^\top\|^2 = \|X\|^2 - 2 \langle H_3, X W_1\rangle
                  + \langle H_3^\top H_3, W_1^\top W_1\rangle

        Exact (same value, same gradients as the direct form), but it skips both N x G
        products of the decoder. `x_sq` is ``||X[rows]||^2``, a constant.
        """
        h3, xw = h3[rows], xw[rows]
        # sums in float64: the three terms are large and nearly cancel
        cross = (h3 * xw).sum(dtype=torch.float64)
        return x_sq - 2 * cross + gram_inner(h3, self.W1)
