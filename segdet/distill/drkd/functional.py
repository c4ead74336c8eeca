"""Pure functions of DRKD: distances with batch-size-invariant
normalisation, the scale-aware size factors, per-image RoIAlign, instance relation matrices and
relation filters."""
import hashlib
import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F
from torchvision.ops import roi_align

__all__ = [
    "NORMALIZATIONS",
    "REF_ROI_SIZE",
    "batch_normalized_l2",
    "reference_level_size",
    "size_factor",
    "per_image_l2",
    "roi_align_per_image",
    "roi_align_stacked",
    "same_image_mask",
    "relation_matrix",
    "random_fc_filter",
    "learned_filter",
    "filter_seed",
]

# "official": the un-squared norms of the DRKD code (batch-size invariant);
# "scale_aware": each norm divided by sqrt(its element count / the count at the reference shape).
NORMALIZATIONS = ("official", "scale_aware")
# k of the official k×k RoIs: the instance terms' reference element count is M_b·C_ref·3·3.
REF_ROI_SIZE = 3

# ‖x‖₂ over all elements (segdet.distill.drkd.fast has a drop-in with a leaner backward)
Norm = Callable[[torch.Tensor], torch.Tensor]


def batch_normalized_l2(diff: torch.Tensor, ref_images: float,
                        norm: Norm = torch.linalg.vector_norm) -> torch.Tensor:
    """sqrt((ref/B)·Σ_b ‖diff_b‖²) for ``diff`` of shape (B, ...): the un-squared L2 norm of the
    whole batch tensor (``torch.dist`` in the DRKD code) rescaled so that it equals the official
    value at B = ``ref_images`` and does not grow with B. Returns a scalar; its gradient at
    ``diff == 0`` is 0 (no NaN)."""
    num_images = diff.shape[0]
    if num_images == 0:
        return diff.sum()
    return norm(diff) * (ref_images / num_images) ** 0.5


def per_image_l2(diffs: Sequence[torch.Tensor], num_images: int, ref_images: float,
                 scales: Optional[Sequence[float]] = None,
                 norm: Norm = torch.linalg.vector_norm) -> torch.Tensor:
    """(ref/B)·Σ_i c_i·‖diffs_i‖ with B = ``num_images``: a sum of per-image Frobenius norms (the
    DRKD instance terms) rescaled to be batch-size invariant. ``diffs`` must be non-empty;
    ``scales`` (one c_i per diff, e.g. :func:`size_factor` values) default to 1."""
    if not diffs:
        raise ValueError("per_image_l2 needs at least one difference tensor")
    if scales is None:
        total = sum(norm(d) for d in diffs)
    else:
        if len(scales) != len(diffs):
            raise ValueError(f"per_image_l2: {len(scales)} scales for {len(diffs)} differences")
        total = sum(norm(d) * c for d, c in zip(diffs, scales))
    return total * (ref_images / num_images)


def reference_level_size(ref_input_size: Sequence[int], stride: int) -> Tuple[int, int]:
    """(⌈H/s⌉, ⌈W/s⌉): the size of the stride-s FPN map of a padded (H, W) input. Detectron2's
    FPN gives exactly this on every level, P6 (max-pool) and P6/P7 (3×3 stride-2 convs) included,
    since each halving of an n-long side gives ⌈n/2⌉ and ⌈⌈n/a⌉/b⌉ = ⌈n/(ab)⌉."""
    h, w = ref_input_size
    return math.ceil(h / stride), math.ceil(w / stride)


def size_factor(count: int, ref_count: int) -> float:
    """sqrt(ref_count / count): the factor that turns an un-squared L2 norm over ``count``
    elements into its value at ``ref_count`` elements of the same per-element content (exactly 1.0
    when the counts are equal)."""
    if count <= 0 or ref_count <= 0:
        raise ValueError(f"size_factor needs positive element counts, got {count} and {ref_count}")
    return (ref_count / count) ** 0.5


def roi_align_per_image(feature: torch.Tensor, boxes: Sequence[torch.Tensor], output_size: int,
                        stride: float) -> List[torch.Tensor]:
    """RoIAlign image b's boxes from image b's feature map (the DRKD code pools every image's boxes
    from image 0).

    Args:
        feature: (B, C, H, W) feature map of stride ``stride``.
        boxes: B tensors (M_b, 4), XYXY in input-image pixels; M_b may be 0.
        output_size: k, the pooled side.
        stride: the feature map's stride (spatial scale 1/stride).
    Returns:
        B tensors (M_b, C, k, k), with torchvision's adaptive sampling ratio and aligned=False:
        :func:`roi_align_stacked` split per image.
    """
    pooled = roi_align_stacked(feature, boxes, output_size, stride)
    return list(pooled.split([int(b.shape[0]) for b in boxes], dim=0))


def roi_align_stacked(feature: torch.Tensor, boxes: Sequence[torch.Tensor], output_size: int,
                      stride: float) -> torch.Tensor:
    """As :func:`roi_align_per_image`, the images' pooled boxes stacked in image order:
    (Σ M_b, C, k, k)."""
    if len(boxes) != feature.shape[0]:
        raise ValueError(f"roi_align_per_image: {len(boxes)} box tensors for a batch of "
                         f"{feature.shape[0]} feature maps")
    if sum(int(b.shape[0]) for b in boxes) == 0:
        return feature.new_zeros((0, feature.shape[1], output_size, output_size))
    rois = torch.cat([
        torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1)
        for i, b in enumerate(boxes)
    ]).to(device=feature.device, dtype=feature.dtype)            # (K, 5): batch index, x0 y0 x1 y1
    return roi_align(feature, rois, output_size=output_size, spatial_scale=1.0 / stride,
                     sampling_ratio=-1, aligned=False)           # (K, C, k, k)


def same_image_mask(counts: Sequence[int], device=None) -> torch.Tensor:
    """(M, M) bool, True where instances i and j belong to the same image, for the instances of
    several images stacked in order (image b contributes ``counts[b]`` rows, M = Σ counts)."""
    image = torch.repeat_interleave(torch.arange(len(counts), device=device),
                                    torch.as_tensor(list(counts), device=device))
    return image[:, None] == image[None, :]


def _masked_softmax(energy: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Row softmax over the entries where ``mask`` is True (every row must have one); masked
    entries are exactly 0, so a block-diagonal mask gives each block's own softmax."""
    if mask is not None:
        energy = energy.masked_fill(~mask, float("-inf"))
    return torch.softmax(energy, dim=1)


def relation_matrix(theta_x: torch.Tensor, phi_x: torch.Tensor,
                    relation_filter: Optional[torch.Tensor] = None,
                    mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """R = softmax_row(E ⊙ Φ) with E = θ(x)·φ(x)ᵀ (no 1/√d scaling, as in the DRKD code).

    Args:
        theta_x, phi_x: (M, D) embeddings of M instances.
        relation_filter: Φ (M, M), or None for R = softmax_row(E).
        mask: (M, M) bool or None; with several images stacked, :func:`same_image_mask` keeps
            each instance's relations within its own image (R is then block-diagonal, each block
            equal to that image's R).
    Returns:
        (M, M), rows summing to 1.
    """
    energy = theta_x @ phi_x.t()
    if relation_filter is not None:
        energy = energy * relation_filter
    return _masked_softmax(energy, mask)


def random_fc_filter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The DRKD code's relation filter, made reproducible: Φ = softmax_row(x·Wᵀ + b) with a fresh,
    untrained ``Linear(d, M)`` whose W (M, d) and b (M,) are drawn U(±1/√d) (PyTorch's default
    Linear init) from ``generator`` (a CPU generator; the draw is moved to x's device).

    Args:
        x: (M, d) flattened instance features.
    Returns:
        Φ (M, M), rows summing to 1.
    """
    m, d = x.shape
    bound = 1.0 / d ** 0.5
    weight = (torch.rand((m, d), generator=generator, dtype=x.dtype) * 2 - 1) * bound
    bias = (torch.rand((m,), generator=generator, dtype=x.dtype) * 2 - 1) * bound
    return torch.softmax(F.linear(x, weight.to(x.device), bias.to(x.device)), dim=1)


def learned_filter(psi_x: torch.Tensor, omega_x: torch.Tensor,
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A learned, permutation-equivariant relation filter Φ = softmax_row(ψ(x)·ω(x)ᵀ / √D).

    Args:
        psi_x, omega_x: (M, D) embeddings of the M instances.
        mask: (M, M) bool or None, as in :func:`relation_matrix`.
    Returns:
        Φ (M, M), rows summing to 1 (0 outside the mask).
    """
    return _masked_softmax(psi_x @ omega_x.t() / psi_x.shape[1] ** 0.5, mask)


def filter_seed(seed: int, iteration: int, level: int, image: int) -> int:
    """A 63-bit seed for the random filter of (seed, iteration, level index, image index); stable
    across processes and Python versions (unlike ``hash``)."""
    key = f"drkd/{int(seed)}/{int(iteration)}/{int(level)}/{int(image)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
