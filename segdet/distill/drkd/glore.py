"""GloRe (Global Reasoning) unit: the pixel-wise relation module of DRKD.

Pixels are projected onto ``num_mid`` graph nodes, one graph convolution reasons over the nodes,
and the result is projected back onto the pixels and added to the input. Nothing of size HW×HW is
formed: the cost is linear in H·W.
"""
import torch
from torch import nn

__all__ = ["GloReUnit"]


class GloReUnit(nn.Module):
    """G(F) = F + BN(W_e·Z·P),  Z = W_s·ReLU(X·(I + A_g)ᵀ + 1·b_gᵀ),  X = V·Pᵀ.

    With N = ``num_mid`` nodes and S = 2·``num_mid`` state channels:
      V = Conv1x1_{C→S}(F) (B,S,HW) and P = Conv1x1_{C→N}(F) (B,N,HW), both with bias; P is also
      the reverse projection. A_g, b_g: ``Conv1d(N,N,1)`` along the node axis; W_s:
      ``Conv1d(S,S,1, bias=False)`` along the state axis; W_e: ``Conv2d(S,C,1, bias=False)``.
      BN has eps 1e-4 and uses batch statistics in training mode.

    Parameters for C=256: 103,168 (num_mid 64) and 656,896 (num_mid 256).

    The forward is the GloRe paper's, product by product in the natural order;
    :class:`segdet.distill.drkd.fast.FastGloReUnit` computes the same function with fewer
    multiply-adds (``DISTILL.DRKD.FAST``).

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

    # ------------------------------------------------------------------ public
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W).
        Returns:
            (B, C, H, W).
        """
        b, c, h, w = x.shape
        state = self.conv_state(x).flatten(2)                                   # V (B, S, HW)
        proj = self.conv_proj(x).flatten(2)                                     # P (B, N, HW)
        nodes = torch.bmm(state, proj.transpose(1, 2))                          # X = V·Pᵀ (B, S, N)
        if self.normalize:
            nodes = nodes / (h * w)
        # graph convolution: node-wise A_g (Conv1d over the node axis) with a residual, then W_s
        hidden = nodes + self.gcn_node(nodes.transpose(1, 2)).transpose(1, 2)   # (B, S, N)
        reasoned = self.gcn_state(torch.relu(hidden))                           # Z (B, S, N)
        pixels = torch.bmm(reasoned, proj).view(b, self.num_state, h, w)        # Z·P (B, S, H, W)
        return x + self._batch_norm(self.conv_extend(pixels))

    # ------------------------------------------------------------------ helpers
    def _batch_norm(self, y: torch.Tensor) -> torch.Tensor:
        if self.training and y.numel() == y.shape[1]:
            # one value per channel (e.g. P7 of a small image, one image per device): torch's BN
            # refuses it; its batch-statistics formula gives (y - mean) = 0, var = 0 (kept in the
            # graph so that every parameter gets its zero gradient, as DDP expects)
            centred = (y - y.mean(dim=(0, 2, 3), keepdim=True)) / self.bn.eps ** 0.5
            return centred * self.bn.weight.view(1, -1, 1, 1) + self.bn.bias.view(1, -1, 1, 1)
        return self.bn(y)
