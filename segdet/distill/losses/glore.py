"""GloRe (Global Reasoning) unit: the pixel-wise relation module of DRKD (spec drkd_dsd.md §A.3).

Pixels are projected onto ``num_mid`` graph nodes, one graph convolution reasons over the nodes,
and the result is projected back onto the pixels and added to the input. Nothing of size HW×HW is
formed: the cost is linear in H·W.
"""
import torch
from torch import nn
from torch.nn import functional as F

from .drkd_functional import conv1x1

__all__ = ["GloReUnit"]


class GloReUnit(nn.Module):
    """G(F) = F + BN(Conv1x1_{S→C}(Z·P)),  Z = W_s·ReLU(X + X·A_gᵀ + b_g),  X = V·Pᵀ.

    With N = ``num_mid`` nodes and S = 2·``num_mid`` state channels:
      V = Conv1x1_{C→S}(F) (B,S,HW) and P = Conv1x1_{C→N}(F) (B,N,HW), both with bias; P is also
      the reverse projection. A_g, b_g: ``Conv1d(N,N,1)`` along the node axis; W_s:
      ``Conv1d(S,S,1, bias=False)`` along the state axis. BN has eps 1e-4 and uses batch
      statistics in training mode.

    Parameters for C=256: 103,168 (num_mid 64) and 656,896 (num_mid 256).

    Args:
        in_channels: C, the channels of the input feature map.
        num_mid: N, the number of graph nodes (state dims are 2·N).
        zero_init_bn: initialise the output BN's γ to 0 so that G starts as the identity (the
            GloRe paper; the DRKD code leaves γ = 1).
        normalize: divide the node features X by H·W (the DRKD code does not).
    """

    def __init__(self, in_channels: int, num_mid: int, *, zero_init_bn: bool = False,
                 normalize: bool = False):
        super().__init__()
        if in_channels < 1 or num_mid < 1:
            raise ValueError(f"GloReUnit needs positive in_channels and num_mid, got {in_channels} "
                             f"and {num_mid}")
        self.num_node = num_mid
        self.num_state = 2 * num_mid
        self.normalize = normalize
        self.conv_state = nn.Conv2d(in_channels, self.num_state, kernel_size=1)
        self.conv_proj = nn.Conv2d(in_channels, self.num_node, kernel_size=1)
        self.gcn_node = nn.Conv1d(self.num_node, self.num_node, kernel_size=1)
        self.gcn_state = nn.Conv1d(self.num_state, self.num_state, kernel_size=1, bias=False)
        self.conv_extend = nn.Conv2d(self.num_state, in_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(in_channels, eps=1e-4)
        if zero_init_bn:
            nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W).
        Returns:
            (B, C, H, W).

        Computed on the flattened map with matrix products ordered for the fewest per-pixel
        operations (no convolution kernels, no (S, HW) state map): with X the flattened input,
        ``V·Pᵀ = W_v·(X·Pᵀ) + b_v·(P·1)ᵀ`` and ``W_e·(Z·P) = (W_e·Z)·P``, so each pixel costs
        3·C·N multiply-adds instead of C·(S+N) + 2·S·N + C·S. The same function as the
        module-by-module form, several times faster in forward + backward on the CPU.
        """
        b, c, h, w = x.shape
        flat = x.flatten(2)                                                      # (B, C, HW)
        p = conv1x1(x, self.conv_proj.weight, self.conv_proj.bias).flatten(2)    # (B, N, HW)
        xp = torch.bmm(flat, p.transpose(1, 2))                                  # (B, C, N)
        nodes = torch.matmul(self.conv_state.weight[:, :, 0, 0], xp) \
            + self.conv_state.bias.view(1, -1, 1) * p.sum(dim=2).unsqueeze(1)     # (B, S, N)
        if self.normalize:
            nodes = nodes / (h * w)
        # graph convolution: identity + learned adjacency along nodes, then a state mixing
        hidden = nodes + F.linear(nodes, self.gcn_node.weight[:, :, 0], self.gcn_node.bias)
        z = torch.matmul(self.gcn_state.weight[:, :, 0], torch.relu(hidden))    # (B, S, N)
        extend = torch.matmul(self.conv_extend.weight[:, :, 0, 0], z)          # (B, C, N)
        y = torch.bmm(extend, p).view(b, c, h, w)                               # (B, C, H, W)
        if self.training and b * h * w == 1:
            # one value per channel (e.g. P7 of a small image, one image per device): torch's BN
            # refuses it; its batch-statistics formula gives (y - mean) = 0, var = 0
            centred = (y - y.mean(dim=(0, 2, 3), keepdim=True)) / self.bn.eps ** 0.5
            return x + centred * self.bn.weight.view(1, -1, 1, 1) + self.bn.bias.view(1, -1, 1, 1)
        return x + self.bn(y)
