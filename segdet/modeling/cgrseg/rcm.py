"""Rectangular Self-Calibration Attention (RCA) and Module (RCM), CGRSeg's token mixer/blocks.

Names follow the official checkpoints (``token_mixer.dwconv_hw``, ``token_mixer.excite.{0,1,3}``,
``norm``, ``mlp.fc1``/``fc2``, ``gamma``).
"""
import torch
from torch import nn


__all__ = ["RCA", "ConvMlp", "RCM"]


class RCA(nn.Module):
    """Rectangular self-calibration attention.

    ``att = sigmoid(DW_{k x 1}(ReLU(BN(DW_{1 x k}(mean_W(x) + mean_H(x))))))`` (the strip
    convolutions run on the broadcast H x W map), output ``att * DW_{s x s}(x)``.
    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, band_kernel_size: int = 11, square_kernel_size: int = 3,
                 ratio: int = 1):
        super().__init__()
        if channels % ratio:
            raise ValueError(f"RCA: channels ({channels}) must be divisible by ratio ({ratio})")
        gc = channels // ratio
        self.dwconv_hw = nn.Conv2d(channels, channels, square_kernel_size,
                                   padding=square_kernel_size // 2, groups=channels)
        self.excite = nn.Sequential(
            nn.Conv2d(channels, gc, (1, band_kernel_size), padding=(0, band_kernel_size // 2), groups=gc),
            nn.BatchNorm2d(gc),
            nn.ReLU(inplace=True),
            nn.Conv2d(gc, channels, (band_kernel_size, 1), padding=(band_kernel_size // 2, 0), groups=gc),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        loc = self.dwconv_hw(x)
        context = x.mean(dim=3, keepdim=True) + x.mean(dim=2, keepdim=True)  # (B, C, H, W)
        return self.excite(context) * loc


class ConvMlp(nn.Module):
    """1x1 conv (C -> hidden) + GELU + 1x1 conv (hidden -> C), no norm. (B, C, H, W) -> same."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RCM(nn.Module):
    """``x + gamma * ConvMlp(BN(RCA(x)))`` (MetaNeXt-style block, layer scale init 1e-6).
    (B, C, H, W) -> (B, C, H, W). The BN is a plain ``nn.BatchNorm2d`` as officially trained."""

    def __init__(self, channels: int, band_kernel_size: int = 11, square_kernel_size: int = 3,
                 ratio: int = 1, mlp_ratio: float = 2.0, layer_scale_init: float = 1e-6):
        super().__init__()
        self.token_mixer = RCA(channels, band_kernel_size, square_kernel_size, ratio)
        self.norm = nn.BatchNorm2d(channels)
        self.mlp = ConvMlp(channels, int(mlp_ratio * channels))
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.token_mixer(x)))
        return x + y * self.gamma.view(1, -1, 1, 1)
