"""DSD (Double Similarity Distillation) as pure functions.

* PSD (pixel-wise similarity): AT attention maps (p = 2) of several layers, resized to one size,
  L2-normalised per sample; residuals between layer pairs, each renormalised; the mean squared
  difference of student and teacher residuals.
* CSD (category-wise similarity): a class × class similarity matrix of the logits, compared by
  MSE. Two forms: ``"paper"`` (softmax over classes, cosine between class maps; the default) and
  ``"cirkd"`` (softmax over space, raw inner products; numerically inert, kept for comparison).

Size: both are means over the batch, so neither changes with the images per device. PSD
compares unit vectors over the N map positions, so it equals a cosine distance / N and falls as
1/N when the same content is sampled on a finer grid; the paper-form CSD is a mean of cosines and
does not change; the CIRKD-form CSD falls as 1/N'² (N' positions after pooling).
:func:`psd_size_factor` / :func:`csd_size_factor` give the factors of the ``"scale_aware"``
normalisation that undo this relative to a reference map size.

No function here owns parameters; teacher inputs are detached.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F

__all__ = [
    "attention_map",
    "normalized_attention",
    "residual_pairs",
    "residual_attention",
    "psd_loss",
    "csd_similarity",
    "csd_loss",
    "psd_size_factor",
    "csd_size_factor",
    "PAIRS",
    "CSD_FORMS",
    "NORMALIZATIONS",
]

PAIRS = ("adjacent", "all")
CSD_FORMS = ("paper", "cirkd")
NORMALIZATIONS = ("official", "scale_aware")


def attention_map(feature: torch.Tensor, p: int = 2) -> torch.Tensor:
    """AT attention map: the channel mean of |f|^p.

    Args:
        feature: (B, C, H, W).
    Returns:
        (B, 1, H, W), non-negative.
    """
    if feature.dim() != 4:
        raise ValueError(f"attention_map: expected a (B, C, H, W) feature map, got shape {tuple(feature.shape)}")
    return feature.abs().pow(p).mean(dim=1, keepdim=True)


def normalized_attention(feature: torch.Tensor, size: Tuple[int, int], p: int = 2) -> torch.Tensor:
    """Attention map resized (bilinear, align_corners=False) to ``size``, flattened and
    L2-normalised per sample.

    Args:
        feature: (B, C, H, W); any channel count and resolution.
        size: (h, w) target size, N = h·w.
    Returns:
        (B, N) unit-norm rows (a zero map stays zero).
    """
    att = attention_map(feature, p)
    if tuple(att.shape[-2:]) != tuple(size):
        att = F.interpolate(att, size=tuple(size), mode="bilinear", align_corners=False)
    return F.normalize(att.flatten(1), p=2, dim=1)


def residual_pairs(num_layers: int, pairs: str = "adjacent") -> List[Tuple[int, int]]:
    """Layer index pairs (n, m), n < m, whose residual â_m − â_n is distilled.

    ``"adjacent"``: (0,1), (1,2), ... (K = L−1, the paper). ``"all"``: every n < m (K = L(L−1)/2,
    CIRKD's re-implementation).
    """
    if pairs not in PAIRS:
        raise ValueError(f"DSD pairs must be one of {PAIRS}, got {pairs!r}")
    if num_layers < 2:
        raise ValueError(f"PSD needs at least 2 layer maps per network to form residuals, got {num_layers}")
    if pairs == "adjacent":
        return [(n, n + 1) for n in range(num_layers - 1)]
    return [(n, m) for n in range(num_layers) for m in range(n + 1, num_layers)]


def residual_attention(atts: Sequence[torch.Tensor], pairs: str = "adjacent") -> List[torch.Tensor]:
    """Renormalised residuals r_{n,m} = (â_m − â_n) / ‖â_m − â_n‖₂ of (B, N) normalised maps.

    Returns:
        K tensors (B, N); a zero residual stays zero (F.normalize's eps), never NaN.
    """
    return [F.normalize(atts[m] - atts[n], p=2, dim=1) for n, m in residual_pairs(len(atts), pairs)]


def psd_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    size: Optional[Tuple[int, int]] = None,
    pairs: str = "adjacent",
    p: int = 2,
) -> torch.Tensor:
    """Pixel-wise similarity distillation (unweighted).

    L = (1/K) Σ_k mean_{b,i} (r^s_k − r^t_k)², which equals (1/K) Σ_k mean_b (2 − 2cos(r^s_k, r^t_k)) / N
    for non-zero residuals.

    Args:
        student_feats: L maps (B, C_l, H_l, W_l), shallow to deep; channels and sizes may differ.
        teacher_feats: L maps (B, C'_l, H'_l, W'_l), in the same layer order.
        size: (h, w) every attention map is resized to; None = the largest student map.
        pairs: ``"adjacent"`` or ``"all"`` (see :func:`residual_pairs`).
        p: AT exponent.
    Returns:
        scalar.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"PSD: the student gives {len(student_feats)} layer maps and the teacher "
                         f"{len(teacher_feats)}; they must be equal (one teacher map per student map)")
    if size is None:
        size = max((tuple(f.shape[-2:]) for f in student_feats), key=lambda s: s[0] * s[1])
    r_s = residual_attention([normalized_attention(f, size, p) for f in student_feats], pairs)
    r_t = residual_attention([normalized_attention(f.detach(), size, p) for f in teacher_feats], pairs)
    return sum((s - t).pow(2).mean() for s, t in zip(r_s, r_t)) / len(r_s)


def _pool(logits: torch.Tensor, pool: int) -> torch.Tensor:
    if pool and pool > 1:
        return F.avg_pool2d(logits, kernel_size=pool, stride=pool, ceil_mode=True)
    return logits


def csd_similarity(logits: torch.Tensor, form: str = "paper", tau: float = 4.0, pool: int = 2) -> torch.Tensor:
    """Class × class similarity matrix of logits.

    Args:
        logits: (B, K, h, w) pre-upsample logits.
        form: ``"paper"``: q = softmax_K(z/τ) per pixel, each class map L2-normalised over the N
            pixels, S = q̂ q̂ᵀ (cosines, in [0, 1]); invariant to a per-pixel shift of z.
            ``"cirkd"``: P = softmax over the N pixels of z/τ per class, S = P Pᵀ; invariant to
            a per-class shift of z.
        tau: softmax temperature.
        pool: average-pool kernel = stride (ceil mode) applied to z first; ≤ 1 disables it.
    Returns:
        (B, K, K).
    """
    if form not in CSD_FORMS:
        raise ValueError(f"CSD form must be one of {CSD_FORMS}, got {form!r}")
    if logits.dim() != 4:
        raise ValueError(f"CSD: expected (B, K, h, w) logits, got shape {tuple(logits.shape)}")
    z = _pool(logits, pool).flatten(2) / tau  # (B, K, N)
    if form == "paper":
        q = F.normalize(F.softmax(z, dim=1), p=2, dim=2)
    else:
        q = F.softmax(z, dim=2)
    return torch.bmm(q, q.transpose(1, 2))


def csd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, form: str = "paper",
             tau: float = 4.0, pool: int = 2) -> torch.Tensor:
    """Category-wise similarity distillation (unweighted): mean_{b,i,j} (S^s − S^t)².

    Args:
        student_logits: (B, K, h, w).
        teacher_logits: (B, K, h', w'); resized (bilinear, align_corners=False) to (h, w) when the
            sizes differ. Detached.
        form, tau, pool: see :func:`csd_similarity`.
    Returns:
        scalar.
    """
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ValueError(f"CSD: student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same batch size and class count")
    teacher_logits = teacher_logits.detach()
    if teacher_logits.shape[-2:] != student_logits.shape[-2:]:
        teacher_logits = F.interpolate(teacher_logits, size=student_logits.shape[-2:], mode="bilinear",
                                       align_corners=False)
    s = csd_similarity(student_logits, form, tau, pool)
    t = csd_similarity(teacher_logits, form, tau, pool)
    return F.mse_loss(s, t)


def _positions(size: Sequence[int], pool: int = 1) -> int:
    h, w = size
    if pool and pool > 1:
        h, w = math.ceil(h / pool), math.ceil(w / pool)
    return int(h) * int(w)


def psd_size_factor(size: Sequence[int], ref_size: Sequence[int]) -> float:
    """N / N_ref for PSD maps of ``size`` (h, w) against ``ref_size``: PSD × this factor is
    (1/K) Σ_k mean_b (2 − 2cos) / N_ref, independent of the map size (exactly 1.0 at ``ref_size``)."""
    return _positions(size) / _positions(ref_size)


def csd_size_factor(size: Sequence[int], ref_size: Sequence[int], form: str = "paper",
                    pool: int = 2) -> float:
    """(N'/N'_ref)² for the ``"cirkd"`` form (N' = positions after the ceil-mode pooling of the
    (h, w) logits, N'_ref the same for ``ref_size``), whose similarities are ~1/N'; 1.0 for the
    ``"paper"`` form, a mean of cosines that does not depend on the size."""
    if form not in CSD_FORMS:
        raise ValueError(f"CSD form must be one of {CSD_FORMS}, got {form!r}")
    if form == "paper":
        return 1.0
    return (_positions(size, pool) / _positions(ref_size, pool)) ** 2
