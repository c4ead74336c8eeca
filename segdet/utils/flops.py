"""FLOP counting for detectron2 / segdet models under two named conventions.

- ``"fvcore"``: fvcore's defaults (1 fused multiply-add = 1 flop): convolutions, linear layers,
  matmul/bmm/einsum (attention), norms and upsampling.
- ``"mmcv"``: what ``mmcv.cnn.get_model_complexity_info`` reports (and papers built on mmseg
  quote): multiply-adds of convolutions (plus bias) and linear layers, plus one op per element
  for norms, ReLU, pooling and bilinear upsampling; matrix products of activations (attention,
  prototype matmuls), softmax, GELU and sigmoids are *not* counted.
"""
from typing import Any, Dict, List

import torch
from torch import nn

__all__ = ["count_flops", "count_module_flops", "CONVENTIONS", "MMCV_HANDLES"]

CONVENTIONS = ("fvcore", "mmcv")


def _numel(value) -> int:
    shape = value.type().sizes()
    n = 1
    for s in shape:
        n *= s
    return n


def _elementwise(inputs: List[Any], outputs: List[Any]) -> int:
    return _numel(outputs[0])


def _batch_norm(inputs: List[Any], outputs: List[Any]) -> int:
    affine = inputs[1].type().kind() != "NoneType" if hasattr(inputs[1].type(), "kind") else True
    return _numel(outputs[0]) * (2 if affine else 1)


def _conv_with_bias(inputs: List[Any], outputs: List[Any]) -> int:
    from fvcore.nn.jit_handles import conv_flop_jit

    flops = conv_flop_jit(inputs, outputs)
    flops = sum(flops.values()) if isinstance(flops, dict) else flops
    has_bias = inputs[2].type().kind() != "NoneType" if hasattr(inputs[2].type(), "kind") else False
    return flops + (_numel(outputs[0]) if has_bias else 0)


def _zero(inputs: List[Any], outputs: List[Any]) -> int:
    # A handle returning 0 (a None handle would leave fvcore's default handle in place).
    return 0


def _baddbmm(inputs: List[Any], outputs: List[Any]) -> int:
    """``baddbmm(bias, a (b,n,k), c (b,k,p))``: 1×1 convs run as batched matmuls (e.g.
    EfficientFormerV2's talking heads) -> their multiply-adds plus the bias adds."""
    b, n, k = inputs[1].type().sizes()
    p = inputs[2].type().sizes()[-1]
    return b * n * k * p + b * n * p


MMCV_HANDLES = {
    "aten::_convolution": _conv_with_bias,
    "aten::baddbmm": _baddbmm,
    # matrix products of activations (attention, prototypes) and cheap non-linearities: not counted
    "aten::matmul": _zero, "aten::mm": _zero, "aten::bmm": _zero, "aten::einsum": _zero,
    "aten::gelu": _zero, "aten::sigmoid": _zero, "aten::hardsigmoid": _zero, "aten::softmax": _zero,
    "aten::upsample_bicubic2d": _zero,
    "aten::batch_norm": _batch_norm,
    "aten::relu": _elementwise, "aten::relu_": _elementwise, "aten::hardtanh": _elementwise,
    "aten::relu6": _elementwise, "aten::avg_pool2d": _elementwise, "aten::max_pool2d": _elementwise,
    "aten::adaptive_avg_pool2d": _elementwise, "aten::upsample_bilinear2d": _elementwise,
    "aten::upsample_nearest2d": _elementwise,
}


def count_module_flops(module: nn.Module, inputs, convention: str = "mmcv") -> Dict[str, float]:
    """Like :func:`count_flops` for a module taking plain tensors ``inputs``; returns
    {"total": GFLOPs, "<child>": GFLOPs, ...}."""
    from fvcore.nn import FlopCountAnalysis

    if convention not in CONVENTIONS:
        raise ValueError(f"FLOP convention must be one of {CONVENTIONS}, got {convention!r}")
    analysis = FlopCountAnalysis(module.eval(), inputs)
    return _finish(analysis, convention)


def _finish(analysis, convention: str) -> Dict[str, float]:
    if convention == "mmcv":
        analysis.set_op_handle(**MMCV_HANDLES)
    else:
        analysis.set_op_handle(**{"aten::baddbmm": _baddbmm})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    result = {"total": analysis.total() / 1e9}
    for name, value in analysis.by_module().items():
        name = name[len("model."):] if name.startswith("model.") else name  # detectron2's tracing wrapper
        if name and name != "model" and "." not in name:
            result[name] = value / 1e9
    return result


def count_flops(model: nn.Module, image: torch.Tensor, convention: str = "fvcore") -> Dict[str, float]:
    """Count the inference flops of a detectron2-style model on one image.

    Args:
        model: a model taking ``[{"image": (3, H, W)}]`` (put in eval mode here).
        image: (3, H, W) input, in the model's input format and value range.
        convention: ``"fvcore"`` or ``"mmcv"`` (see the module docstring).

    Returns:
        {"total": GFLOPs, "<top-level module>": GFLOPs, ...}, one flop = one multiply-add.
    """
    from detectron2.utils.analysis import FlopCountAnalysis

    if convention not in CONVENTIONS:
        raise ValueError(f"FLOP convention must be one of {CONVENTIONS}, got {convention!r}")
    model.eval()
    return _finish(FlopCountAnalysis(model, [{"image": image}]), convention)
