"""Rectangular Self-Calibration Attention (RCA) and Module (RCM), CGRSeg's token mixer/blocks.

Names follow the official checkpoints (``token_mixer.dwconv_hw``, ``token_mixer.excite.{0,1,3}``,
``norm``, ``mlp.fc1``/``fc2``, ``gamma``).
"""
import torch
from torch import nn

from ..fusion import InferenceFusable, fold_bn_into_following_conv, fold_conv_bn, scale_conv_output, with_gelu

__all__ = ["RCA", "ConvMlp", "RCM"]


class RCA(InferenceFusable):
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

    def _fuse_for_inference(self) -> None:
        """Fold the BatchNorm between the strip convolutions into the first one."""
        self.excite[0], self.excite[1] = fold_conv_bn(self.excite[0], self.excite[1]), nn.Identity()


class ConvMlp(nn.Module):
    """1x1 conv (C -> hidden) + GELU + 1x1 conv (hidden -> C), no norm. (B, C, H, W) -> same."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RCM(InferenceFusable):
    """``x + gamma * ConvMlp(BN(RCA(x)))`` (MetaNeXt-style block, layer scale init 1e-6).
    (B, C, H, W) -> (B, C, H, W). The BN is a plain ``nn.BatchNorm2d`` as officially trained.

    ``fuse_for_inference()`` folds the BN into ``mlp.fc1`` (a 1x1 conv, so exact), ``gamma``
    into ``mlp.fc2`` and the RCA's BN into its first strip conv."""

    def __init__(self, channels: int, band_kernel_size: int = 11, square_kernel_size: int = 3,
                 ratio: int = 1, mlp_ratio: float = 2.0, layer_scale_init: float = 1e-6):
        super().__init__()
        self.token_mixer = RCA(channels, band_kernel_size, square_kernel_size, ratio)
        self.norm = nn.BatchNorm2d(channels)
        self.mlp = ConvMlp(channels, int(mlp_ratio * channels))
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused_for_inference:  # norm and gamma folded into the MLP
            return self.mlp(self.token_mixer(x)).add_(x)
        y = self.mlp(self.norm(self.token_mixer(x)))
        return x + y * self.gamma.view(1, -1, 1, 1)

    def _fuse_for_inference(self) -> None:
        self.token_mixer.fuse_for_inference()
        self.mlp.fc1 = with_gelu(fold_bn_into_following_conv(self.norm, self.mlp.fc1))
        self.mlp.act = nn.Identity()  # applied by the ConvGELU
        self.mlp.fc2 = scale_conv_output(self.mlp.fc2, self.gamma)
        self.norm = nn.Identity()
