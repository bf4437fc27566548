"""The attention of STAGATE: sigmoid logits, softmax over each spot's neighbourhood."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._graph import NeighbourGraph
from ._sparse import aggregate


class TiedGATLayer(nn.Module):
    r"""Graph attention with sigmoid logits, shared by the encoder and the decoder.

    .. math::
        \alpha_{ij} = \operatorname{softmax}_{j \in S_i}
            \sigma(v_s^\top h_i + v_r^\top h_j), \qquad
        h'_i = \sum_{j \in S_i} \alpha_{ij} h_j

    :math:`S_i` holds the spatial neighbours of spot :math:`i` and :math:`i` itself, so each
    row of the attention matrix sums to 1. The layer owns only the attention vectors; the
    linear maps belong to the auto-encoder, which ties them between encoder and decoder.

    Parameters
    ----------
    channels
        Width of the features the attention is computed on (512 in the paper).

    Shapes: ``h`` (N, F); ``graph`` with E edges (self-loops included) -> ``alpha`` (E,).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.v_s = nn.Parameter(torch.empty(channels))  # scores the attending spot i
        self.v_r = nn.Parameter(torch.empty(channels))  # scores the attended neighbour j
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        # glorot on a (1, channels) vector, as PyG's GATConv initialises att_src / att_dst
        bound = math.sqrt(6.0 / (1 + self.channels))
        for v in (self.v_s, self.v_r):
            nn.init.uniform_(v, -bound, bound, generator=generator)

    def attention(self, h: Tensor, graph: NeighbourGraph) -> Tensor:
        """Attention weights ``alpha`` (E,) of every edge j -> i; rows sum to 1."""
        s = h @ self.v_s  # per spot, not per edge
        r = h @ self.v_r
        # index_select, not s[...]: its gradient is a plain scatter-add (on a GPU, indexing's
        # gradient sorts the indices first)
        logits = torch.sigmoid(s.index_select(0, graph.dst) + r.index_select(0, graph.src))
        return segment_softmax(logits, graph.dst, graph.n_nodes)

    def forward(self, h: Tensor, graph: NeighbourGraph) -> tuple[Tensor, Tensor]:
        """Return ``(sum_j alpha_ij h_j, alpha)``."""
        alpha = self.attention(h, graph)
        return aggregate(alpha, h, graph), alpha

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def segment_softmax(logits: Tensor, index: Tensor, n_segments: int) -> Tensor:
    """Softmax of `logits` (E,) within each group of equal `index` (E,), groups 0..n-1.

    The same operations, in the same order, as ``torch_geometric.utils.softmax`` (so the
    same bits): subtract each group's maximum, exponentiate, divide by the group's sum
    (+1e-16, so an empty sum never divides by zero). Why not PyG's own: importing
    torch_geometric costs ~2.3 s per process (it loads torch._dynamo), a tenth of a
    STARmap run, for these five lines.
    """
    group_max = logits.new_zeros(n_segments).scatter_reduce_(
        0, index, logits.detach(), reduce="amax", include_self=False)
    out = (logits - group_max.index_select(0, index)).exp()
    group_sum = out.new_zeros(n_segments).scatter_add_(0, index, out) + 1e-16
    return out / group_sum.index_select(0, index)
