"""GloRe (Global Reasoning) unit: the pixel-wise relation module of DRKD (spec drkd_dsd.md §A.3).

Pixels are projected onto ``num_mid`` graph nodes, one graph convolution reasons over the nodes,
and the result is projected back onto the pixels and added to the input. Nothing of size HW×HW is
formed: the cost is linear in H·W.
"""
import torch
from torch import nn

from .functional import conv1x1
from .lean_ops import inner_products

__all__ = ["GloReUnit"]


class GloReUnit(nn.Module):
    """G(F) = F + BN(W_e·Z·P),  Z = W_s·ReLU(X·(I + A_g)ᵀ + 1·b_gᵀ),  X = V·Pᵀ.

    With N = ``num_mid`` nodes and S = 2·``num_mid`` state channels:
      V = Conv1x1_{C→S}(F) (B,S,HW) and P = Conv1x1_{C→N}(F) (B,N,HW), both with bias; P is also
      the reverse projection. A_g, b_g: ``Conv1d(N,N,1)`` along the node axis; W_s:
      ``Conv1d(S,S,1, bias=False)`` along the state axis; W_e: ``Conv2d(S,C,1, bias=False)``.
      BN has eps 1e-4 and uses batch statistics in training mode.

    Parameters for C=256: 103,168 (num_mid 64) and 656,896 (num_mid 256).

    The matrix products are associated for the fewest multiply-adds at the given H·W and batch
    size (:meth:`plan`): on large maps through the (C,N) node sums F·Pᵀ and the (C,N) matrix
    W_e·Z, on small maps through the (S,HW) state maps; every order computes the same function.

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
        plan = self.plan(b, h * w)
        proj = conv1x1(x, self.conv_proj.weight, self.conv_proj.bias).flatten(2)    # (B, N, HW)
        relu_hidden = torch.relu(self._hidden(x, proj, plan["left"]))               # (B, S, N)
        w_state, w_extend = self.gcn_state.weight[:, :, 0], self.conv_extend.weight[:, :, 0, 0]
        if plan["right"] == "state_map":
            state = torch.matmul(w_state, torch.bmm(relu_hidden, proj))             # (B, S, HW)
            y = torch.matmul(w_extend, state)
        else:
            if plan["right"] == "premultiplied":
                extend = torch.matmul(w_extend @ w_state, relu_hidden)              # (B, C, N)
            else:
                extend = torch.matmul(w_extend, torch.matmul(w_state, relu_hidden))
            y = torch.bmm(extend, proj)                                             # (B, C, HW)
        return x + self._batch_norm(y.view(b, c, h, w))

    def plan(self, batch: int, hw: int) -> dict:
        """The association of the matrix products with the fewest multiply-adds for ``batch``
        maps of ``hw`` pixels (C, S, N as in the class docstring), per map:

          * "left", the node features X·(I + A_g)ᵀ: "node_sums" forms F·Pᵀ and multiplies on
            the (C,N) side (C·N·HW + C·N² + S·C·N), "state_map" forms V and multiplies on the
            (S,HW) side (HW·(S·C + N² + S·N));
          * "right", W_e·W_s·ReLU(H)·P: through the (C,N) matrix E = W_e·W_s·ReLU(H), with W_e·W_s
            formed once per batch ("premultiplied": C·S²/B + C·S·N) or not ("chained":
            S²·N + C·S·N), then E·P (C·N·HW); or through the (S,HW) state map ("state_map":
            HW·(S·N + S² + C·S)).
        """
        c, s, n = self.conv_extend.out_channels, self.num_state, self.num_node
        left = {"node_sums": batch * (c * n * hw + c * n * n + s * c * n),
                "state_map": batch * hw * (s * c + n * n + s * n)}
        right = {"premultiplied": c * s * s + batch * (c * s * n + c * n * hw),
                 "chained": batch * (s * s * n + c * s * n + c * n * hw),
                 "state_map": batch * hw * (s * n + s * s + c * s)}
        return {"left": min(left, key=left.get), "right": min(right, key=right.get)}

    # ------------------------------------------------------------------ helpers
    def _hidden(self, x: torch.Tensor, proj: torch.Tensor, order: str) -> torch.Tensor:
        """H = X·(I + A_g)ᵀ + 1·b_gᵀ (B, S, N), X = V·Pᵀ (divided by HW if ``normalize``)."""
        hw = proj.shape[2]
        adjacency = self.gcn_node.weight[:, :, 0]
        propagate = adjacency + torch.eye(self.num_node, dtype=adjacency.dtype, device=adjacency.device)
        if order == "node_sums":
            # V·Pᵀ = W_v·(F·Pᵀ) + b_v·(P·1)ᵀ
            sums = inner_products(x.flatten(2), proj)                                 # (B, C, N)
            nodes = torch.matmul(self.conv_state.weight[:, :, 0, 0], sums @ propagate.t()) \
                + self.conv_state.bias.view(1, -1, 1) * (proj.sum(dim=2) @ propagate.t()).unsqueeze(1)
        else:
            state = conv1x1(x, self.conv_state.weight, self.conv_state.bias).flatten(2)  # (B, S, HW)
            nodes = inner_products(state, torch.matmul(propagate, proj))
        if self.normalize:
            nodes = nodes / hw
        return nodes + self.gcn_node.bias.view(1, 1, -1)

    def _batch_norm(self, y: torch.Tensor) -> torch.Tensor:
        if self.training and y.numel() == y.shape[1]:
            # one value per channel (e.g. P7 of a small image, one image per device): torch's BN
            # refuses it; its batch-statistics formula gives (y - mean) = 0, var = 0 (kept in the
            # graph so that every parameter gets its zero gradient, as DDP expects)
            centred = (y - y.mean(dim=(0, 2, 3), keepdim=True)) / self.bn.eps ** 0.5
            return centred * self.bn.weight.view(1, -1, 1, 1) + self.bn.bias.view(1, -1, 1, 1)
        return self.bn(y)
