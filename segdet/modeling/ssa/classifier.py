"""SSA: the Semantic and Spatial Adaptive classifier (spec cgrseg_ssa.md Part B, B.3–B.5).

A plain classifier scores pixel features against fixed prototypes S (the ``conv_seg`` weights).
SSA uses those scores as a *coarse mask* M to pull the prototypes toward each image's class
centres in two domains (semantic: feature centres; spatial: centres of a conditional position
encoding P_f), then classifies with the adapted prototypes by cosine similarity × temperature.
During training a *teacher* branch with the same structure builds the centres from the ground
truth instead of M (online, no separate training); the student is distilled from it.

A head wrapper needs only its last feature ``feat`` (B, C, h, w), its ``conv_seg`` (an
``nn.Conv2d(C, K, 1)``) and its ``Dropout2d``::

    coarse = conv_seg(dropout(feat))                               # M, (B, K, h, w)
    out = ssa(feat, coarse, conv_seg.weight)                        # out["logits"]: O, (B, K, h, w)
    if training:
        t = ssa.teacher_forward(feat, out["pos_feat"], conv_seg.weight, gt)
        losses = ssa_losses(out, t, coarse, gt, ...)                 # see losses.py

Sub-module names equal the official ones (``get_feat_pos``, ``center_pos``,
``center_content_proj``, ``center_pos_proj``, ``center_proj``, ``gt_center_content_proj``,
``gt_center_pos_proj``, ``gt_center_proj``), so official ``decode_head.<name>.*`` weights map 1:1
onto ``<wrapper prefix>.<name>.*``.
"""
from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .losses import nearest_labels

__all__ = ["SSAClassifier", "class_means", "TEACHER_MODULES"]

# Training-only sub-modules (absent from inference models and exported weights).
TEACHER_MODULES = ("gt_center_content_proj", "gt_center_pos_proj", "gt_center_proj")


def _mlp(channels: int, hidden: int) -> nn.Sequential:
    """Linear(2C → hidden, no bias) – ReLU – Linear(hidden → C); indices 0 and 2 as officially."""
    return nn.Sequential(nn.Linear(2 * channels, hidden, bias=False), nn.ReLU(inplace=True),
                         nn.Linear(hidden, channels))


def class_means(values: torch.Tensor, labels: torch.Tensor, num_classes: int, fallback: torch.Tensor,
                per_image: bool, ignore_index: int = 255) -> torch.Tensor:
    """Mean feature of each ground-truth class, with a fallback row for absent classes.

    Args:
        values: (B, C, n) features of n pixels.
        labels: (B, n) integer labels in [0, K) or ``ignore_index`` (excluded).
        num_classes: K.
        fallback: (K, C) rows used for classes without any pixel (pass a detached tensor to keep
            gradients out of it).
        per_image: True = one mean per image, (B, K, C); False = one mean over the whole batch,
            (K, C).
    Returns:
        (B, K, C) or (K, C).
    """
    valid = labels != ignore_index
    clean = torch.where(valid, labels, torch.zeros_like(labels)).long()
    onehot = F.one_hot(clean, num_classes).to(values.dtype) * valid.unsqueeze(-1).to(values.dtype)  # (B, n, K)
    sums = torch.bmm(onehot.transpose(1, 2), values.transpose(1, 2))  # (B, K, C)
    counts = onehot.sum(1)  # (B, K)
    if not per_image:
        sums, counts = sums.sum(0), counts.sum(0)
    means = sums / counts.clamp(min=1).unsqueeze(-1)
    return torch.where(counts.unsqueeze(-1) > 0, means, fallback.to(means.dtype))


class SSAClassifier(nn.Module):
    """SSA classifier parameters and its student / teacher forwards.

    Parameters (C channels, K classes, hidden = C/2):
      * ``get_feat_pos``: depthwise 3×3 conv with bias (9C + C), the position encoding P_f;
      * ``center_pos``: ``nn.Embedding(K, C)`` (N(0, 1)), the position basis P;
      * ``center_content_proj`` / ``center_pos_proj``: MLP 2C → C/2 → C (φ_s, φ_p);
      * ``center_proj``: Linear(C, C, no bias) on Sp + Pp;
      * teacher only (``with_teacher``): ``gt_center_content_proj``, ``gt_center_pos_proj``,
        ``gt_center_proj`` with the same shapes.
    C=256, K=150: 303,616 inference + 262,656 teacher parameters.
    """

    def __init__(self, channels: int, num_classes: int, temperature: float = 15.0, with_teacher: bool = True,
                 hidden_channels: Optional[int] = None, ignore_index: int = 255):
        """
        Args:
            channels: C, the feature width (``conv_seg.in_channels``).
            num_classes: K.
            temperature: scale of the cosine-similarity logits.
            with_teacher: build the GT-guided teacher branch (training); False for inference /
                export (see also :meth:`drop_teacher`).
            hidden_channels: the MLPs' hidden width (default C // 2, as officially).
            ignore_index: label ignored when the teacher computes GT class centres.
        """
        super().__init__()
        if channels < 1 or num_classes < 1:
            raise ValueError(f"SSAClassifier: channels and num_classes must be >= 1, got {channels}, {num_classes}")
        hidden = hidden_channels or channels // 2
        self.channels, self.num_classes, self.temperature = channels, num_classes, float(temperature)
        self.ignore_index = ignore_index
        self.get_feat_pos = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=True)
        self.center_pos = nn.Embedding(num_classes, channels)  # default init N(0, 1)
        self.center_content_proj = _mlp(channels, hidden)
        self.center_pos_proj = _mlp(channels, hidden)
        self.center_proj = nn.Linear(channels, channels, bias=False)
        self.with_teacher = with_teacher
        if with_teacher:
            self.gt_center_content_proj = _mlp(channels, hidden)
            self.gt_center_pos_proj = _mlp(channels, hidden)
            self.gt_center_proj = nn.Linear(channels, channels, bias=False)

    def drop_teacher(self) -> "SSAClassifier":
        """Delete the teacher branch (for inference / export); returns self."""
        for name in TEACHER_MODULES:
            if hasattr(self, name):
                delattr(self, name)
        self.with_teacher = False
        return self

    # ---------------------------------------------------------------------------------- helpers
    def _basis(self, conv_seg_weight: torch.Tensor) -> torch.Tensor:
        """(K, C) or (K, C, 1, 1) -> (K, C), checked against the module's sizes."""
        s = conv_seg_weight.flatten(1) if conv_seg_weight.dim() == 4 else conv_seg_weight
        if tuple(s.shape) != (self.num_classes, self.channels):
            raise ValueError(f"SSAClassifier: conv_seg weight has shape {tuple(conv_seg_weight.shape)}, expected "
                             f"({self.num_classes}, {self.channels}) or ({self.num_classes}, {self.channels}, 1, 1)")
        return s

    def _check_feat(self, feat: torch.Tensor) -> None:
        if feat.dim() != 4 or feat.shape[1] != self.channels:
            raise ValueError(f"SSAClassifier: expected feat (B, {self.channels}, h, w), got {tuple(feat.shape)}")

    def cosine_logits(self, feat: torch.Tensor, pos_feat: torch.Tensor, proto: torch.Tensor) -> torch.Tensor:
        """temperature · cos(feat + pos_feat, proto) per pixel and class.

        Args:
            feat, pos_feat: (B, C, h, w).
            proto: (B, K, C).
        Returns:
            (B, K, h, w).
        """
        b, c, h, w = feat.shape
        e = F.normalize((feat + pos_feat).flatten(2), p=2, dim=1, eps=1e-12)  # (B, C, n)
        z = F.normalize(proto, p=2, dim=-1, eps=1e-12)  # (B, K, C)
        return (self.temperature * torch.bmm(z, e)).view(b, -1, h, w)

    # ---------------------------------------------------------------------------------- student
    def forward(self, feat: torch.Tensor, coarse_logits: torch.Tensor,
                conv_seg_weight: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Student classifier (training and inference).

        Args:
            feat: (B, C, h, w) S_f, the head's last feature (before dropout).
            coarse_logits: (B, K, h, w) M = conv_seg(dropout(feat)).
            conv_seg_weight: (K, C) or (K, C, 1, 1) S (gradients flow into it).
        Returns:
            dict with ``logits`` O (B, K, h, w); ``sem_proto`` Sp, ``pos_proto`` Pp (B, K, C);
            ``pos_feat`` P_f (B, C, h, w) (for :meth:`teacher_forward`).
        """
        self._check_feat(feat)
        s = self._basis(conv_seg_weight)
        b = feat.shape[0]
        if coarse_logits.shape != (b, self.num_classes) + tuple(feat.shape[-2:]):
            raise ValueError(f"SSAClassifier: coarse logits have shape {tuple(coarse_logits.shape)}, expected "
                             f"({b}, {self.num_classes}, {feat.shape[-2]}, {feat.shape[-1]})")
        pos_feat = self.get_feat_pos(feat)
        m = coarse_logits.flatten(2)  # (B, K, n)
        # spatial domain: per-class softmax over pixels, centres of P_f
        pos_centre = torch.bmm(F.softmax(m, dim=-1), pos_feat.flatten(2).transpose(1, 2))  # (B, K, C)
        basis_pos = self.center_pos.weight.unsqueeze(0).expand(b, -1, -1)
        pos_proto = self.center_pos_proj(torch.cat([basis_pos, pos_centre], dim=-1))
        # semantic domain: per-pixel softmax over classes, normalised soft means of feat
        q = F.softmax(m, dim=1)
        sem_centre = torch.bmm(q, feat.flatten(2).transpose(1, 2)) / (q.sum(-1, keepdim=True) + 1e-12)
        sem_proto = self.center_content_proj(torch.cat([sem_centre, s.unsqueeze(0).expand(b, -1, -1)], dim=-1))
        logits = self.cosine_logits(feat, pos_feat, self.center_proj(sem_proto + pos_proto))
        return {"logits": logits, "sem_proto": sem_proto, "pos_proto": pos_proto, "pos_feat": pos_feat}

    # ---------------------------------------------------------------------------------- teacher
    def teacher_forward(self, feat: torch.Tensor, pos_feat: torch.Tensor, conv_seg_weight: torch.Tensor,
                        gt: torch.Tensor) -> Dict[str, torch.Tensor]:
        """GT-guided teacher classifier (training only).

        The GT is nearest-downsampled to (h, w). Semantic centres are batch-level GT class means
        of ``feat`` (fallback: the detached S row); spatial centres are per-image GT class means of
        ``pos_feat`` (fallback: the detached ``center_pos`` row). Gradients flow into ``feat``,
        ``pos_feat``, S and ``center_pos`` (through the MLP inputs) as in the official code.

        Args:
            feat: (B, C, h, w).
            pos_feat: (B, C, h, w) the student's ``pos_feat``.
            conv_seg_weight: (K, C) or (K, C, 1, 1).
            gt: (B, H, W) labels, ``ignore_index`` ignored.
        Returns:
            dict with ``logits`` Ô (B, K, h, w); ``sem_proto`` Ŝp, ``pos_proto`` P̂p (B, K, C).
        """
        if not self.with_teacher:
            raise RuntimeError("SSAClassifier.teacher_forward: the teacher branch was not built "
                               "(with_teacher=False or drop_teacher() was called)")
        self._check_feat(feat)
        s = self._basis(conv_seg_weight)
        b, _, h, w = feat.shape
        if gt.dim() != 3 or gt.shape[0] != b:
            raise ValueError(f"SSAClassifier.teacher_forward: expected gt (B={b}, H, W), got {tuple(gt.shape)}")
        labels = nearest_labels(gt, (h, w)).flatten(1)  # (B, n)
        k, ign = self.num_classes, self.ignore_index
        sem_centre = class_means(feat.flatten(2), labels, k, s.detach(), per_image=False, ignore_index=ign)
        sem_proto = self.gt_center_content_proj(torch.cat([sem_centre, s], dim=-1))  # (K, C)
        sem_proto = sem_proto.unsqueeze(0).expand(b, -1, -1)
        basis_pos = self.center_pos.weight
        pos_centre = class_means(pos_feat.flatten(2), labels, k, basis_pos.detach(), per_image=True, ignore_index=ign)
        pos_proto = self.gt_center_pos_proj(torch.cat([pos_centre, basis_pos.unsqueeze(0).expand(b, -1, -1)], dim=-1))
        logits = self.cosine_logits(feat, pos_feat, self.gt_center_proj(sem_proto + pos_proto))
        return {"logits": logits, "sem_proto": sem_proto, "pos_proto": pos_proto}
