"""Tools: train STAGATE, find domains (one run or a vote of several), refine and score them;
after the domains: UMAP/PAGA, marker genes, Moran's I, attention by domain, denoising check."""

from ._consensus import consensus_domains
from ._denoise import evaluate_denoising
from ._domains import domains
from ._downstream import (
    attention_by_domain,
    denoised_matrix,
    embedding_umap,
    markers,
    morans_i,
    paga,
    paga_path,
)
from ._metrics import score_domains
from ._refine import refine_domains
from ._sections import section_agreement, section_mixing
from ._stagate import stagate

__all__ = ["attention_by_domain", "consensus_domains", "denoised_matrix", "domains",
           "embedding_umap", "evaluate_denoising", "markers", "morans_i", "paga", "paga_path",
           "refine_domains", "score_domains", "section_agreement", "section_mixing", "stagate"]
