"""Instance relation module of DRKD: self-attention over the
instances of one image, with a selectable relation filter."""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .functional import learned_filter, random_fc_filter, relation_matrix, same_image_mask

__all__ = ["InstanceRelation", "RELATION_FILTERS"]

RELATION_FILTERS = ("random_fc", "learned", "none")


class InstanceRelation(nn.Module):
    """z = x + W(R·g(x)),  R = softmax_row((θ(x)·φ(x)ᵀ) ⊙ Φ),  on the M instances of one image.

    θ, φ, g: ``Linear(d, d//2)``; W: ``Linear(d//2, d)`` (all with bias): 10,622,592 parameters
    for d = 256·3·3 = 2304. The relation filter Φ is
      * ``"random_fc"``: softmax_row of a fresh untrained ``Linear(d, M)`` drawn from a generator
        passed to :meth:`forward` (the DRKD two-stage code, made reproducible); no parameters;
      * ``"learned"``: softmax_row(ψ(x)·ω(x)ᵀ/√(d//2)) with ψ, ω ``Linear(d, d//2)``
        (+5,310,720 parameters for d = 2304);
      * ``"none"``: Φ = 1 (the DRKD one-stage code); no parameters.

    Args:
        dim: d, the flattened instance feature size C·k·k.
        relation_filter: one of :data:`RELATION_FILTERS`.
    """

    def __init__(self, dim: int, relation_filter: str = "learned"):
        super().__init__()
        if relation_filter not in RELATION_FILTERS:
            raise ValueError(f"relation_filter must be one of {RELATION_FILTERS}, got {relation_filter!r}")
        if dim < 2:
            raise ValueError(f"InstanceRelation needs dim >= 2, got {dim}")
        hidden = dim // 2
        self.relation_filter = relation_filter
        self.theta = nn.Linear(dim, hidden)
        self.phi = nn.Linear(dim, hidden)
        self.g = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, dim)
        if relation_filter == "learned":
            self.psi = nn.Linear(dim, hidden)
            self.omega = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor,
                generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
                counts: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (M, C, k, k) instance features of one image, M >= 1; or, with ``counts``, the
                instances of several images stacked in image order (image b has ``counts[b]``
                rows, possibly 0). Relations are formed within each image only, so one call on
                the stack equals one call per image, with each weight matrix read once.
            generator: the CPU generator(s) the ``"random_fc"`` filter is drawn from, one per
                image (a single generator for a single image); ignored by the other filters.
            counts: instances per image, or None for a single image.
        Returns:
            z (M, C, k, k) and the relation matrix R (M, M) (block-diagonal for several images).
        """
        flat = x.flatten(1)                                    # (M, d)
        counts = [flat.shape[0]] if counts is None else [int(c) for c in counts]
        if sum(counts) != flat.shape[0]:
            raise ValueError(f"InstanceRelation: counts {counts} do not add up to the {flat.shape[0]} "
                             f"instances given")
        mask = same_image_mask(counts, flat.device) if len(counts) > 1 else None
        if self.relation_filter == "random_fc":
            generators = [generator] if isinstance(generator, torch.Generator) else list(generator or [])
            if len(generators) != len(counts) or any(g is None for g in generators):
                raise ValueError(f"relation_filter 'random_fc' needs one torch.Generator per image "
                                 f"({len(counts)}), got {generator!r}")
            phi_filter = torch.block_diag(*[
                random_fc_filter(chunk, g) if len(chunk) else flat.new_zeros((0, 0))
                for chunk, g in zip(flat.split(counts), generators)])
        elif self.relation_filter == "learned":
            phi_filter = learned_filter(self.psi(flat), self.omega(flat), mask)
        else:
            phi_filter = None
        relation = relation_matrix(self.theta(flat), self.phi(flat), phi_filter, mask)   # (M, M)
        z = flat + self.out(relation @ self.g(flat))
        return z.view_as(x), relation
