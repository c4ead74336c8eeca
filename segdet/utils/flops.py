"""FLOP counting for detectron2 / segdet models under two named conventions.

- ``"fvcore"``: fvcore's defaults (1 fused multiply-add = 1 flop): convolutions, linear layers,
  matmul/bmm/einsum (attention), norms and upsampling.
- ``"mmcv"``: what ``mmcv.cnn.get_model_complexity_info`` reports (and papers built on mmseg
  quote): multiply-adds of convolutions (plus bias) and linear layers, plus one op per element
  for norms, activations, pooling and upsampling; matrix products (attention, prototype
  matmuls) and softmax are *not* counted.
"""
from typing import Any, Dict, List

import torch
from torch import nn

__all__ = ["count_flops", "CONVENTIONS"]

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


_MMCV_HANDLES = {
    "aten::_convolution": _conv_with_bias,
    "aten::matmul": None, "aten::mm": None, "aten::bmm": None, "aten::einsum": None,
    "aten::batch_norm": _batch_norm,
    "aten::relu": _elementwise, "aten::relu_": _elementwise, "aten::gelu": _elementwise,
    "aten::hardtanh": _elementwise, "aten::relu6": _elementwise, "aten::hardsigmoid": _elementwise,
    "aten::sigmoid": _elementwise, "aten::avg_pool2d": _elementwise, "aten::max_pool2d": _elementwise,
    "aten::adaptive_avg_pool2d": _elementwise, "aten::upsample_bilinear2d": _elementwise,
    "aten::upsample_nearest2d": _elementwise, "aten::upsample_bicubic2d": None,
}


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
    analysis = FlopCountAnalysis(model, [{"image": image}])
    if convention == "mmcv":
        analysis.set_op_handle(**_MMCV_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    by_module = analysis.by_module()
    result = {"total": analysis.total() / 1e9}
    for name, value in by_module.items():
        name = name[len("model."):] if name.startswith("model.") else name  # the tracing wrapper
        if name and name != "model" and "." not in name:
            result[name] = value / 1e9
    return result
