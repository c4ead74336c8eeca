import pytest
import torch

from segdet.distill.drkd.fast import inner_products, l2_norm


def test_inner_products_on_a_hand_case():
    a = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]])     # (1, 2, 3)
    b = torch.tensor([[[1.0, 0.0, -1.0]]])                     # (1, 1, 3)
    assert inner_products(a, b).tolist() == [[[-2.0], [0.0]]]


def test_inner_products_gradients_equal_bmm_and_are_contiguous():
    torch.manual_seed(0)
    a = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 5, 3, dtype=torch.float64)
    ours = torch.autograd.grad((inner_products(a, b) * weight).sum(), (a, b))
    reference = torch.autograd.grad((torch.bmm(a, b.transpose(1, 2)) * weight).sum(), (a, b))
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want)
        assert got.is_contiguous()
    assert torch.autograd.gradcheck(inner_products, (a, b))


def test_inner_products_skips_the_gradient_nobody_needs():
    a = torch.randn(1, 2, 4)                                   # a detached teacher map
    b = torch.randn(1, 3, 4, requires_grad=True)
    inner_products(a, b).sum().backward()
    torch.testing.assert_close(b.grad, a.sum(dim=1, keepdim=True).expand(1, 3, 4))


def test_inner_products_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(B, P, K\) and \(B, Q, K\)"):
        inner_products(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))


def test_l2_norm_value_and_gradient():
    x = torch.tensor([[3.0, 0.0], [0.0, -4.0]], requires_grad=True)
    norm = l2_norm(x)
    assert norm.item() == 5.0
    norm.backward()
    torch.testing.assert_close(x.grad, torch.tensor([[0.6, 0.0], [0.0, -0.8]]))
    y = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(l2_norm, (y,))


def test_l2_norm_gradient_is_zero_not_nan_at_zero():
    x = torch.zeros(2, 3, requires_grad=True)
    l2_norm(x).backward()
    assert torch.equal(x.grad, torch.zeros(2, 3))
