"""Folding of normalisation and scaling layers into convolutions (inference only).

Pure helpers: each builds and returns a NEW module (the input's dtype and device) and never
modifies its arguments. Exactness: for modules in eval mode, ``fold_conv_bn(conv, bn)(x) ==
bn(conv(x))`` and ``fold_bn_into_following_conv(bn, conv)(x) == conv(bn(x))`` up to float
rounding (BatchNorm in eval is the per-channel affine map ``x * scale + shift``; see
:func:`bn_scale_shift`).
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "bn_scale_shift",
    "fold_affine_into_conv",
    "fold_conv_bn",
    "fold_bn_into_following_conv",
    "fold_seq",
    "scale_conv_output",
    "ChannelAffine",
    "conv_to_channel_affine",
]


def bn_scale_shift(bn: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x * scale + shift``: scale, shift of shape (C,).

    ``scale = weight / sqrt(running_var + eps)``, ``shift = bias - running_mean * scale``
    (weight 1 / bias 0 without affine parameters). Raises ValueError for a norm without running
    statistics (its eval output depends on the batch, so it cannot be folded).
    """
    if not isinstance(bn, _BatchNorm):
        raise ValueError(f"bn_scale_shift: expected a BatchNorm module, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"bn_scale_shift: {type(bn).__name__} has no running statistics "
                         f"(track_running_stats=False) and cannot be folded")
    with torch.no_grad():
        var = bn.running_var.to(torch.float64)
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.to(torch.float64)
        shift = -bn.running_mean.to(torch.float64) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.to(torch.float64)
    return scale, shift


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A copy of conv's geometry with the given (float64) weight / bias, cast back to conv's dtype."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"fusion: only zero-padded convolutions are supported, got padding_mode="
                         f"{conv.padding_mode!r}")
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight.to(conv.weight.dtype))
        out.bias.copy_(bias.to(conv.weight.dtype))
    out.train(conv.training)
    return out


def _check_conv(conv: nn.Module, name: str) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"{name}: expected an nn.Conv2d, got {type(conv).__name__}")


def fold_affine_into_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: Optional[torch.Tensor] = None
                          ) -> nn.Conv2d:
    """Conv whose output is ``conv(x) * scale + shift`` (per output channel).

    Args:
        conv: any zero-padded ``nn.Conv2d`` (groups, stride, dilation allowed).
        scale: (C_out,) (or anything with C_out elements, e.g. a (C_out, 1, 1) layer scale).
        shift: (C_out,) or None (= 0).
    """
    _check_conv(conv, "fold_affine_into_conv")
    scale = scale.detach().reshape(-1).to(torch.float64)
    if scale.numel() != conv.out_channels:
        raise ValueError(f"fold_affine_into_conv: scale has {scale.numel()} elements, expected "
                         f"{conv.out_channels} (the conv's output channels)")
    shift = torch.zeros_like(scale) if shift is None else shift.detach().reshape(-1).to(torch.float64)
    if shift.numel() != conv.out_channels:
        raise ValueError(f"fold_affine_into_conv: shift has {shift.numel()} elements, expected "
                         f"{conv.out_channels}")
    w = conv.weight.detach().to(torch.float64)
    b = conv.bias.detach().to(torch.float64) if conv.bias is not None else torch.zeros_like(scale)
    return _new_conv(conv, w * scale.view(-1, 1, 1, 1), b * scale + shift)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """``bn(conv(x))`` (bn in eval mode) as one conv with bias."""
    _check_conv(conv, "fold_conv_bn")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"fold_conv_bn: BatchNorm has {bn.num_features} channels, the conv "
                         f"outputs {conv.out_channels}")
    return fold_affine_into_conv(conv, *bn_scale_shift(bn))


def fold_bn_into_following_conv(bn: nn.Module, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv(bn(x))`` (bn in eval mode) as one conv with bias.

    Exact only when the conv adds no padding (a padded border would see the BN shift where the
    original saw zeros), so ``conv.padding`` must be 0; any kernel size, stride and groups.
    """
    _check_conv(conv, "fold_bn_into_following_conv")
    if bn.num_features != conv.in_channels:
        raise ValueError(f"fold_bn_into_following_conv: BatchNorm has {bn.num_features} channels, "
                         f"the conv takes {conv.in_channels}")
    padded = conv.padding != "valid" if isinstance(conv.padding, str) else any(p != 0 for p in conv.padding)
    if padded:
        raise ValueError(f"fold_bn_into_following_conv: the conv must have padding 0, got "
                         f"{conv.padding}")
    scale, shift = bn_scale_shift(bn)
    w = conv.weight.detach().to(torch.float64)  # (C_out, C_in / groups, kh, kw)
    c_out, c_in_g = w.shape[:2]
    groups = conv.groups
    # Input channel of weight entry [o, j]: (o // (C_out / groups)) * C_in_g + j.
    in_idx = (torch.arange(c_out, device=w.device) // (c_out // groups)).view(-1, 1) * c_in_g \
        + torch.arange(c_in_g, device=w.device).view(1, -1)  # (C_out, C_in_g)
    s = scale.to(w.device)[in_idx]
    t = shift.to(w.device)[in_idx]
    b = (conv.bias.detach().to(torch.float64) if conv.bias is not None
         else torch.zeros(c_out, dtype=torch.float64, device=w.device))
    new_b = b + (w.sum(dim=(2, 3)) * t).sum(dim=1)
    return _new_conv(conv, w * s.view(c_out, c_in_g, 1, 1), new_b)


def scale_conv_output(conv: nn.Conv2d, scale: torch.Tensor) -> nn.Conv2d:
    """Conv computing ``conv(x) * scale`` (per output channel, e.g. a layer scale)."""
    return fold_affine_into_conv(conv, scale)


class ChannelAffine(nn.Module):
    """Per-channel affine map ``y = x * scale + shift`` on (B, C, H, W) (buffers scale, shift of
    shape (C,)); any memory format. The inference form of a depthwise 1x1 conv (+ BN)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        if scale.dim() != 1 or scale.shape != shift.shape:
            raise ValueError(f"ChannelAffine: scale and shift must be (C,) vectors, got "
                             f"{tuple(scale.shape)} and {tuple(shift.shape)}")
        self.register_buffer("scale", scale.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("shift", shift.detach().clone().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)

    def extra_repr(self) -> str:
        return f"channels={self.scale.shape[1]}"


def conv_to_channel_affine(conv: nn.Conv2d) -> ChannelAffine:
    """A depthwise 1x1 conv (groups = in = out channels, stride 1, no padding) as a
    :class:`ChannelAffine` (the same map; cheaper than a grouped convolution on CPU)."""
    _check_conv(conv, "conv_to_channel_affine")
    c = conv.out_channels
    if not (conv.in_channels == c == conv.groups and tuple(conv.kernel_size) == (1, 1)
            and tuple(conv.stride) == (1, 1) and tuple(conv.dilation) == (1, 1)
            and not isinstance(conv.padding, str) and tuple(conv.padding) == (0, 0)):
        raise ValueError(f"conv_to_channel_affine: expected a depthwise 1x1 conv with stride 1 and no "
                         f"padding, got {conv}")
    shift = conv.bias.detach() if conv.bias is not None else torch.zeros_like(conv.weight[:, 0, 0, 0])
    return ChannelAffine(conv.weight.detach().reshape(c), shift)


def fold_seq(seq: nn.Module) -> nn.Module:
    """The official ``Sequential(conv, bn)`` unit as one folded conv (any other module as is)."""
    if isinstance(seq, nn.Sequential) and len(seq) == 2 and isinstance(seq[0], nn.Conv2d) \
            and isinstance(seq[1], _BatchNorm):
        return fold_conv_bn(seq[0], seq[1])
    return seq
