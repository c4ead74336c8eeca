"""Class-centre gathering (OCR's SpatialGather) and the Dynamic Prototype Guided (DPG) head."""
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["spatial_gather", "DPGHead"]


def spatial_gather(feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Class centres: ``softmax_HW(logits) @ feats^T``.

    Args:
        feats: (B, C, H, W) features.
        logits: (B, K, H, W) class logits.
    Returns:
        (B, K, C): one feature centre per class (the official (B, C, K, 1), transposed).
    """
    b, c = feats.shape[:2]
    k = logits.shape[1]
    probs = logits.reshape(b, k, -1).softmax(dim=2)
    return torch.matmul(probs, feats.reshape(b, c, -1).transpose(1, 2))


class DPGHead(nn.Module):
    """GCNet-style gate from the class centres (pool='att', fusion 'channel_mul').

    ``a = softmax_K(conv_mask(ctx))``, ``v = sum_k a_k ctx_k`` (the dynamic prototype),
    ``gate = sigmoid(conv(ReLU(LN(conv(v)))))``; output ``x * gate``.
    ``forward(x (B, C, H, W), context (B, K, C)) -> (B, C, H, W)``. At init the last conv is
    zero, so gate = 0.5.
    """

    def __init__(self, channels: int, mid_channels: int):
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, 1)
        self.channel_mul_conv = nn.Sequential(
            nn.Conv2d(channels, mid_channels, 1),
            nn.LayerNorm([mid_channels, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, channels, 1),
        )
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_mul_conv[-1].weight)
        nn.init.zeros_(self.channel_mul_conv[-1].bias)

    def prototype(self, context: torch.Tensor) -> torch.Tensor:
        """(B, K, C) class centres -> (B, C, 1, 1) attention-pooled prototype."""
        b, _, c = context.shape
        # conv_mask is a 1x1 conv over the (C, K, 1) centre "image": a linear map on C.
        weights = F.linear(context, self.conv_mask.weight.view(1, c), self.conv_mask.bias)  # (B, K, 1)
        weights = weights.softmax(dim=1)
        return torch.matmul(weights.transpose(1, 2), context).view(b, c, 1, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.channel_mul_conv(self.prototype(context)))
        return x * gate
