"""SSA training losses as pure functions (spec cgrseg_ssa.md B.6).

Shapes: B images, K classes, C channels, (h, w) the classifier's feature resolution (stride 8 for
CGRSeg), (H, W) the label resolution. Every function here is vectorised (no Python loop over
classes or images), keeps the labels on their device, and returns a finite 0 with a zero
gradient when no pixel is valid.

:func:`ssa_losses` combines the eight terms with their weights; the others are the terms.
"""
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from torch.nn import functional as F

from .boundary import boundary_mask
from ..sem_seg.losses import sem_seg_cross_entropy

__all__ = [
    "DEFAULT_SSA_LOSS_WEIGHTS",
    "SSA_LOSS_NAMES",
    "nearest_labels",
    "upsample_logits",
    "valid_pixel_cross_entropy",
    "response_kd_loss",
    "count_masks",
    "dice_loss",
    "semantic_kd_loss",
    "spatial_kd_loss",
    "ssa_losses",
]

# The official weights (main CE, coarse CE, teacher CE, response KD, student Dice, teacher Dice,
# semantic-domain KD, spatial-domain KD); keys are cfg.MODEL.SSA.LOSS_WEIGHTS' keys lower-cased.
DEFAULT_SSA_LOSS_WEIGHTS: Dict[str, float] = {
    "ce": 1.0, "coarse_ce": 1.0, "teacher_ce": 1.0, "response_kd": 1.0,
    "dice": 1.0, "teacher_dice": 1.0, "semantic_kd": 10.0, "spatial_kd": 0.4,
}
# weight key -> returned loss name
SSA_LOSS_NAMES: Dict[str, str] = {
    "ce": "loss_sem_seg",
    "coarse_ce": "loss_ssa_coarse_ce",
    "teacher_ce": "loss_ssa_teacher_ce",
    "response_kd": "loss_ssa_response_kd",
    "dice": "loss_ssa_dice",
    "teacher_dice": "loss_ssa_teacher_dice",
    "semantic_kd": "loss_ssa_semantic_kd",
    "spatial_kd": "loss_ssa_spatial_kd",
}
_TEACHER_TERMS = ("teacher_ce", "response_kd", "teacher_dice", "semantic_kd", "spatial_kd")


def nearest_labels(targets: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Nearest downsampling of a label map: output pixel (i, j) takes input pixel
    (⌊i·H/h⌋, ⌊j·W/w⌋), e.g. (8i, 8j) from 512² to 64². Ignore values are kept.

    Args:
        targets: (B, H, W) integer labels.
    Returns:
        (B, h, w) int64.
    """
    if targets.dim() != 3:
        raise ValueError(f"expected (B, H, W) labels, got shape {tuple(targets.shape)}")
    if tuple(targets.shape[-2:]) == tuple(size):
        return targets.long()
    return F.interpolate(targets.unsqueeze(1).float(), size=tuple(size), mode="nearest").squeeze(1).long()


def upsample_logits(logits: torch.Tensor, size: Tuple[int, int], align_corners: bool) -> torch.Tensor:
    """(B, K, h, w) -> (B, K, H, W), bilinear."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def _split_labels(labels: torch.Tensor, num_classes: int, ignore_index: int):
    """(valid mask, labels with ignored pixels set to 0); raises on labels outside [0, K)."""
    valid = labels != ignore_index
    clean = torch.where(valid, labels, torch.zeros_like(labels)).long()
    bad = (clean >= num_classes) | (clean < 0)
    if bool(bad.any()):
        raise ValueError(f"labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}; "
                         f"got values {torch.unique(labels[bad]).tolist()}")
    return valid, clean


def valid_pixel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Coarse-mask CE and teacher CE (terms 2, 3): softmax CE averaged over valid pixels.

    Args:
        logits: (B, K, H, W) at the label size.
        targets: (B, H, W).
    Returns:
        scalar; 0 when every pixel is ignored.
    """
    return sem_seg_cross_entropy(logits, targets, ignore_index=ignore_index, avg_non_ignore=True)


def response_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                     boundary: torch.Tensor, smoothness: float = 0.5, ignore_index: int = 255) -> torch.Tensor:
    """Response-domain distillation (term 4): boundary-, category- and entropy-aware soft CE.

    With p̂ = softmax(Ô) (detached), q = (1 − α)·onehot(y) + α·p̂, l_i = −Σ_k q_ik log softmax(O)_ik
    and the teacher entropy H_i = −Σ_k p̂_ik log(p̂_ik + 1e-12) (0 on ignored pixels), for each class c
    present in the batch's labels:
        L_c = ½ [ Σ_{i∈c∩E} H_i l_i / (Σ_{i∈c∩E} H_i + 1e-12)
                + Σ_{i∈c∖E} H_i l_i / (Σ_{i∈c∖E} H_i + 1e-12) ]
    and the loss is the mean of L_c over present classes (0 when none). An empty boundary or
    interior subset contributes 0 but still counts in the ½ (as in the official code).

    Args:
        student_logits: (B, K, h, w) O.
        teacher_logits: (B, K, h, w) Ô (detached here).
        labels: (B, h, w) labels at the logits' resolution (see :func:`nearest_labels`).
        boundary: (B, h, w) bool boundary region E (see :func:`~.boundary.boundary_mask`).
        smoothness: α, the teacher's share of the soft target.
    Returns:
        scalar.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.shape[-2:] != labels.shape[-2:] \
            or labels.shape != boundary.shape:
        raise ValueError("response_kd_loss: expected student/teacher logits (B, K, h, w) and labels/boundary "
                         f"(B, h, w); got {tuple(student_logits.shape)}, {tuple(teacher_logits.shape)}, "
                         f"{tuple(labels.shape)}, {tuple(boundary.shape)}")
    k = student_logits.shape[1]
    valid, clean = _split_labels(labels, k, ignore_index)
    p_t = F.softmax(teacher_logits.detach(), dim=1)
    log_p_s = F.log_softmax(student_logits, dim=1)
    nll = -log_p_s.gather(1, clean.unsqueeze(1)).squeeze(1)
    l = (1.0 - smoothness) * nll - smoothness * (p_t * log_p_s).sum(1)  # (B, h, w)
    ent = -(p_t * torch.log(p_t + 1e-12)).sum(1) * valid
    edge = (boundary & valid).to(l.dtype)
    inner = (~boundary & valid).to(l.dtype)
    idx = clean.flatten()

    def per_class(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(k).index_add_(0, idx, values.flatten())

    present = per_class(valid.to(l.dtype)) > 0
    term_e = per_class(edge * ent * l) / (per_class(edge * ent) + 1e-12)
    term_i = per_class(inner * ent * l) / (per_class(inner * ent) + 1e-12)
    per_c = 0.5 * (term_e + term_i) * present
    return per_c.sum() / present.sum().clamp(min=1).to(l.dtype)


def _present_pairs(targets: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(B, K) bool: class k occurs (as a valid label) in image b."""
    b = targets.shape[0]
    valid, clean = _split_labels(targets, num_classes, ignore_index)
    idx = (torch.arange(b, device=targets.device).view(b, 1, 1) * num_classes + clean).flatten()
    counts = torch.zeros(b * num_classes, device=targets.device).index_add_(0, idx, valid.flatten().float())
    return (counts > 0).view(b, num_classes)


def count_masks(targets: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Number of (image, present class) pairs in the batch: Dice's local ``num_masks``. The caller
    all-reduces it over processes and divides by the world size before :func:`dice_loss`.

    Args:
        targets: (B, H, W).
    Returns:
        float scalar tensor.
    """
    return _present_pairs(targets, num_classes, ignore_index).sum().float()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: Union[float, torch.Tensor],
              ignore_index: int = 255) -> torch.Tensor:
    """Sigmoid Dice over the classes present in each image (terms 5, 6).

    For each image b and class c present in it: σ = sigmoid(logits[b, c]), t = [y_b = c] (ignored
    pixels are negatives), d = 1 − (2Σσt + 1) / (Σσ + Σt + 1). Loss = Σ d / max(num_masks, 1).

    Args:
        logits: (B, K, H, W) at the label size.
        targets: (B, H, W).
        num_masks: the (all-reduced, per-process) mask count; see :func:`count_masks`.
    Returns:
        scalar; 0 when no class is present.
    """
    if logits.dim() != 4 or targets.shape != (logits.shape[0],) + tuple(logits.shape[-2:]):
        raise ValueError(f"dice_loss: expected logits (B, K, H, W) and targets (B, H, W); got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    b_idx, c_idx = _present_pairs(targets, logits.shape[1], ignore_index).nonzero(as_tuple=True)
    if b_idx.numel() == 0:
        return logits.sum() * 0.0
    prob = logits[b_idx, c_idx].sigmoid().flatten(1)  # (M, H*W)
    tgt = (targets[b_idx].long() == c_idx.view(-1, 1, 1)).flatten(1).to(prob.dtype)
    d = 1.0 - (2.0 * (prob * tgt).sum(1) + 1.0) / (prob.sum(1) + tgt.sum(1) + 1.0)
    denom = torch.as_tensor(num_masks, dtype=prob.dtype, device=prob.device).clamp(min=1.0)
    return d.sum() / denom


def semantic_kd_loss(student_proto: torch.Tensor, teacher_proto: torch.Tensor, temperature: float = 15.0,
                     student_key: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Semantic-domain distillation (term 7, unweighted): one-sided class-relation loss.

    R(X)_ij = softmax_j(τ · x̂_i · x̂_jᵀ) with x̂ the L2-normalised prototypes; in the student's R the
    key side x̂_j is detached (gradients reach the query prototypes only); the teacher's R is
    detached. D = ReLU(R(Sp) − R(Ŝp)) with the diagonal zeroed; loss = mean_{b,i} Σ_j D_bij.

    Args:
        student_proto: (B, K, C) Sp.
        teacher_proto: (B, K, C) Ŝp.
        temperature: τ.
        student_key: the key side of the student's relation; default ``student_proto.detach()``
            (official). Passing a constant tensor makes the loss an ordinary function of
            ``student_proto`` (used for gradient checks).
    Returns:
        scalar; 0 when student == teacher.
    """
    if student_proto.shape != teacher_proto.shape or student_proto.dim() != 3:
        raise ValueError(f"semantic_kd_loss: expected two (B, K, C) prototypes, got "
                         f"{tuple(student_proto.shape)} and {tuple(teacher_proto.shape)}")
    s = F.normalize(student_proto, p=2, dim=-1, eps=1e-12)
    t = F.normalize(teacher_proto.detach(), p=2, dim=-1, eps=1e-12)
    key = s.detach() if student_key is None else F.normalize(student_key, p=2, dim=-1, eps=1e-12)
    r_s = F.softmax(temperature * torch.bmm(s, key.transpose(1, 2)), dim=-1)
    r_t = F.softmax(temperature * torch.bmm(t, t.transpose(1, 2)), dim=-1)
    k = s.shape[1]
    off_diag = 1.0 - torch.eye(k, dtype=s.dtype, device=s.device)
    return (F.relu(r_s - r_t) * off_diag).sum(-1).mean()


def spatial_kd_loss(student_pos: torch.Tensor, teacher_pos: torch.Tensor) -> torch.Tensor:
    """Spatial-domain distillation (term 8, unweighted): soft CE over the channel axis,
    mean_{b,k} Σ_c −softmax_c(P̂p) log softmax_c(Pp), teacher detached.

    As the official code, this is a cross-entropy, not a KL: with student == teacher it equals the
    teacher's entropy (ln C for uniform rows) and its gradient is 0.

    Args:
        student_pos: (B, K, C) Pp.
        teacher_pos: (B, K, C) P̂p.
    Returns:
        scalar.
    """
    if student_pos.shape != teacher_pos.shape:
        raise ValueError(f"spatial_kd_loss: shapes differ: {tuple(student_pos.shape)} vs {tuple(teacher_pos.shape)}")
    return -(F.softmax(teacher_pos.detach(), dim=-1) * F.log_softmax(student_pos, dim=-1)).sum(-1).mean()


def ssa_losses(
    student_out: Mapping[str, torch.Tensor],
    teacher_out: Optional[Mapping[str, torch.Tensor]],
    coarse_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    weights: Optional[Mapping[str, float]] = None,
    ignore_index: int = 255,
    avg_non_ignore: bool = True,
    smoothness: float = 0.5,
    edge_size: int = 3,
    border: int = 6,
    relation_temperature: float = 15.0,
    num_masks: Optional[Union[float, torch.Tensor]] = None,
) -> Dict[str, torch.Tensor]:
    """All SSA training losses, each already multiplied by its weight.

    Every label-size term, the main CE included, upsamples its logits bilinearly with
    align_corners=True, as the official ``CGRSeg_ssa.forward_train`` does before calling
    ``self.losses`` (the model's align_corners=False applies to its inference output only).

    Args:
        student_out: :meth:`SSAClassifier.forward`'s dict: ``logits`` O (B, K, h, w), ``sem_proto``
            Sp and ``pos_proto`` Pp (B, K, C).
        teacher_out: :meth:`SSAClassifier.teacher_forward`'s dict (Ô, Ŝp, P̂p), or None (no teacher
            branch: only the CE, coarse-CE and Dice terms).
        coarse_logits: (B, K, h, w) the coarse mask M.
        targets: (B, H, W) labels at the input size.
        weights: {key of :data:`DEFAULT_SSA_LOSS_WEIGHTS`: weight}; missing keys keep the default.
            A term whose weight is 0 is not computed nor returned.
        avg_non_ignore: the main CE's reduction (False = mmseg's mean over all pixels, official).
        smoothness, edge_size, border: response KD's α and boundary mask.
        relation_temperature: τ of the semantic-domain relation.
        num_masks: Dice normaliser (all-reduced by the caller); None = this batch's count.
    Returns:
        {name in :data:`SSA_LOSS_NAMES`: weighted scalar}.
    """
    w = dict(DEFAULT_SSA_LOSS_WEIGHTS)
    unknown = set(weights or {}) - set(w)
    if unknown:
        raise KeyError(f"unknown SSA loss weight(s) {sorted(unknown)}; valid keys: {sorted(w)}")
    w.update(weights or {})
    if teacher_out is None:
        w.update({k: 0.0 for k in _TEACHER_TERMS})
    on = {k for k, v in w.items() if v != 0}
    logits = student_out["logits"]
    size = tuple(targets.shape[-2:])
    num_classes = logits.shape[1]
    out: Dict[str, torch.Tensor] = {}

    def up(x: torch.Tensor) -> torch.Tensor:
        return upsample_logits(x, size, align_corners=True)

    if "ce" in on:
        out["ce"] = sem_seg_cross_entropy(up(logits), targets,
                                          ignore_index=ignore_index, avg_non_ignore=avg_non_ignore)
    if "coarse_ce" in on:
        out["coarse_ce"] = valid_pixel_cross_entropy(up(coarse_logits), targets, ignore_index)
    if "teacher_ce" in on:
        out["teacher_ce"] = valid_pixel_cross_entropy(up(teacher_out["logits"]), targets, ignore_index)
    if "response_kd" in on:
        labels = nearest_labels(targets, tuple(logits.shape[-2:]))
        edges = boundary_mask(labels, edge_size=edge_size, border=border, ignore_index=ignore_index)
        out["response_kd"] = response_kd_loss(logits, teacher_out["logits"], labels, edges,
                                              smoothness=smoothness, ignore_index=ignore_index)
    if {"dice", "teacher_dice"} & on and num_masks is None:
        num_masks = count_masks(targets, num_classes, ignore_index)
    if "dice" in on:
        out["dice"] = dice_loss(up(logits), targets, num_masks, ignore_index)
    if "teacher_dice" in on:
        out["teacher_dice"] = dice_loss(up(teacher_out["logits"]), targets, num_masks, ignore_index)
    if "semantic_kd" in on:
        out["semantic_kd"] = semantic_kd_loss(student_out["sem_proto"], teacher_out["sem_proto"],
                                              relation_temperature)
    if "spatial_kd" in on:
        out["spatial_kd"] = spatial_kd_loss(student_out["pos_proto"], teacher_out["pos_proto"])
    return {SSA_LOSS_NAMES[k]: w[k] * v for k, v in out.items()}
