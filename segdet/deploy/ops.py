"""Faster equivalents of a few standard operations, for the fused inference modules only.

Each one computes what its docstring names up to float rounding; the tests compare every one
with the plain operation.

* :class:`ConvGELU`: ``GELU(conv(x))`` as one oneDNN convolution with GELU as its post-op.
* :func:`gelu_`: GELU in place on a temporary.
* :func:`upsample_channels_last`: bilinear resize in channels-last layout.
* :func:`mix_heads`: a 1x1 conv across attention heads as one batched matrix product.
"""
from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvGELU", "with_gelu", "gelu_", "upsample_channels_last", "mix_heads", "is_tracing"]


def _onednn_conv_pointwise():
    """oneDNN's convolution with a fused element-wise post-op (the kernel torch.compile's CPU
    backend emits for conv + activation), or None where this PyTorch build lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_CONV_POINTWISE = _onednn_conv_pointwise()


def is_tracing() -> bool:
    """True while torch.compile, torch.export or the ONNX exporter traces the forward."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return (torch.compiler.is_compiling() or (is_exporting is not None and is_exporting())
            or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


class ConvGELU(nn.Conv2d):
    """``GELU(conv(x))`` (exact, erf GELU) as one module; the parameters of the ``nn.Conv2d`` it
    replaces.

    With ``use_onednn`` (the default), on CPU float32 without autograd it runs as one oneDNN
    convolution with GELU as its post-op, so the activation is applied while the output is still
    in cache: about 2x faster than conv then GELU on EfficientFormerV2's 1x1 / depthwise maps on
    2 threads; the values equal ``F.gelu(conv(x))`` up to float rounding (~1e-6). Elsewhere (GPU,
    float64, autograd, tracing for export or compilation, builds without oneDNN, or
    ``use_onednn=False``) it is exactly ``F.gelu(conv(x))``, standard operations only.
    """

    use_onednn: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.use_onednn and _CONV_POINTWISE is not None and torch.backends.mkldnn.enabled
                and x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                and not is_tracing()):
            return _CONV_POINTWISE(x, self.weight, self.bias, list(self.padding), list(self.stride),
                                   list(self.dilation), self.groups, "gelu", [None], "none")
        return F.gelu(super().forward(x))


def with_gelu(conv: nn.Conv2d) -> ConvGELU:
    """A :class:`ConvGELU` sharing ``conv``'s weight and bias (zero padding, numeric padding)."""
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"with_gelu: expected an nn.Conv2d, got {type(conv).__name__}")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"with_gelu: expected a zero-padded conv with numeric padding, got {conv}")
    fused = ConvGELU(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                     bias=conv.bias is not None, device="meta")
    fused.weight, fused.bias = conv.weight, conv.bias
    fused.train(conv.training)
    return fused


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """GELU (exact, erf) in place when no gradient is recorded (x must be a temporary the caller
    owns): saves allocating, and page-faulting, a fresh output map."""
    if (torch.is_grad_enabled() and x.requires_grad) or is_tracing():
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


def upsample_channels_last(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize computed in channels-last layout: (B, C, h, w) ->
    (B, C, H, W), channels-last. The NCHW kernel is an order of magnitude slower for many
    channels on few pixels (EfficientFormerV2's 1024-channel stride-2 attention output)."""
    return F.interpolate(x.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                         align_corners=False)


def mix_heads(conv: nn.Conv2d, attn: torch.Tensor) -> torch.Tensor:
    """``conv(attn)`` for a 1x1 conv across the head axis of attn (B, heads, Nq, Nk), as one
    batched matrix product (an order of magnitude faster on CPU than a convolution with so few
    channels and so many pixels). Returns (B, heads, Nq, Nk)."""
    b, h = attn.shape[:2]
    out = torch.baddbmm(conv.bias.view(1, h, 1), conv.weight.view(1, h, h).expand(b, h, h),
                        attn.reshape(b, h, -1))
    return out.view(attn.shape)
