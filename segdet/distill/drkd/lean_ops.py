"""Autograd ops with a leaner backward than their composition from torch ops, for the large
per-pixel maps of the distillation losses. Same values and gradients; first-order only.

* :func:`inner_products` ``a·bᵀ`` over the last axis: torch's ``bmm(a, b.transpose(1, 2))``
  returns b's gradient in the transposed layout, and every later accumulation into b's
  (contiguous) gradient is then a strided copy. Here both gradients come back contiguous.
* :func:`l2_norm` ``‖x‖``: torch's backward takes three passes over x (divide, multiply, mask
  the zero norm); this one takes one.
"""
import torch

__all__ = ["inner_products", "l2_norm"]


class _InnerProducts(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return torch.bmm(a, b.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = torch.bmm(grad, b) if ctx.needs_input_grad[0] else None
        grad_b = torch.bmm(grad.transpose(1, 2), a) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def inner_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, P, K) × (B, Q, K) -> (B, P, Q), entry [i, p, q] = Σ_k a[i, p, k]·b[i, q, k] (e.g. the
    node sums F·Pᵀ of a GloRe unit over K = H·W pixels). Gradients are contiguous (B, P, K) and
    (B, Q, K)."""
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"inner_products needs (B, P, K) and (B, Q, K), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return _InnerProducts.apply(a, b)


class _L2Norm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        norm = torch.linalg.vector_norm(x)
        ctx.save_for_backward(x, norm)
        return norm

    @staticmethod
    def backward(ctx, grad):
        x, norm = ctx.saved_tensors
        # d‖x‖/dx = x/‖x‖, and 0 at x = 0 (the subgradient torch uses too)
        scale = torch.where(norm > 0, grad / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
        return x * scale


def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖₂ over all elements (a scalar); the gradient is x/‖x‖, 0 where x = 0."""
    return _L2Norm.apply(x)
