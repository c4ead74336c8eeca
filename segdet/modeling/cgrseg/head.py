"""CGRSeg decode head (ECCV'24): pyramid context extraction + spatial feature reconstruction +
Dynamic Prototype Guided classification, as a Detectron2 semantic-segmentation head.

Submodule names follow the official checkpoints: ``trans`` (pyramid-context RCM stack),
``meta`` (per-level RCMs), ``SIM`` (gated fusions), ``conv`` (top-down 1x1 convs),
``linear_fuse``, ``conv_seg``, ``lgc`` (the DPG head).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..backbone.features import check_in_features
from .dpg import DPGHead, spatial_gather
from ..sem_seg.losses import sem_seg_cross_entropy
from .rcm import RCM

__all__ = ["ConvNormAct", "FuseBlockMulti", "RCMStack", "pyramid_pool", "CGRSegHead"]


class ConvNormAct(nn.Module):
    """1x1 conv (no bias) + norm (+ ReLU): mmcv's ConvModule as used by the head.
    Init: kaiming-normal (fan_out, relu), norm weight 1 / bias 0. (B, Cin, H, W) -> (B, Cout, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, groups: int = 1, act: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)
        self.bn = get_norm(norm, out_channels)
        self.activate = nn.ReLU(inplace=True) if act else None
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.activate(x) if self.activate is not None else x



class FuseBlockMulti(nn.Module):
    """SIM: ``BN(conv(x_l)) * Up_bilinear(hsigmoid(BN(conv(x_g))))``.
    x_l (B, C_i, H, W) local, x_g (B, C_i, h, w) global -> (B, C, H, W)."""

    def __init__(self, in_channels: int, channels: int, norm: str):
        super().__init__()
        self.fuse1 = ConvNormAct(in_channels, channels, norm)
        self.fuse2 = ConvNormAct(in_channels, channels, norm)

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
        gate = F.hardsigmoid(self.fuse2(x_g))
        gate = F.interpolate(gate, size=x_l.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse1(x_l) * gate


class RCMStack(nn.Module):
    """``transformer_blocks``: a stack of RCMs (pyramid context extraction). (B, C, h, w) -> same."""

    def __init__(self, num_blocks: int, channels: int, band_kernel_size: int, square_kernel_size: int,
                 ratio: int, mlp_ratio: float):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            RCM(channels, band_kernel_size, square_kernel_size, ratio, mlp_ratio) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


def pyramid_pool(features: Sequence[torch.Tensor], stride: int = 2) -> torch.Tensor:
    """PPA: adaptive-average-pool every map to the grid of the last one reduced by ``stride``
    ((h-1)//stride+1 per side) and concatenate: -> (B, sum C_i, h', w')."""
    h, w = features[-1].shape[-2:]
    size = ((h - 1) // stride + 1, (w - 1) // stride + 1)
    return torch.cat([F.adaptive_avg_pool2d(x, size) for x in features], dim=1)


@SEM_SEG_HEADS_REGISTRY.register()
class CGRSegHead(nn.Module):
    """CGRSeg head on stride-8/16/32 features.

    ``forward(features, targets=None)``: eval -> (logits (B, K, H, W) upsampled bilinearly to
    ``common_stride`` x the stride-8 grid, i.e. the padded input size; {}); training ->
    (None, {"loss_sem_seg": CE of the final logits upsampled to the label size}).
    ``decode_features(features)`` -> (B, C, H/8, W/8) reconstructed features (before
    ``linear_fuse``); ``layers(features)`` -> (B, K, H/8, W/8) final logits, also the output of
    the ``logits_tap`` Identity module (for feature taps).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        channels: int = 128,
        next_repeat: int = 5,
        dw_size: int = 11,
        neck_size: int = 11,
        square_kernel_size: int = 3,
        ratio: int = 1,
        mlp_ratio: float = 2.0,
        is_dw: bool = True,
        dropout: float = 0.1,
        use_dpg: bool = True,
        norm: str = "SyncBN",
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        avg_non_ignore: bool = True,
    ):
        """
        Args:
            input_shape: the three input maps (strides 8/16/32, in that order of stride).
            num_classes: K.
            channels: C, the head width.
            next_repeat: number of RCMs in pyramid context extraction.
            dw_size / neck_size: band kernel of the per-level / pyramid-context RCMs.
            square_kernel_size, ratio, mlp_ratio: RCM settings.
            is_dw: ``linear_fuse`` is a depthwise 1x1 conv.
            dropout: Dropout2d probability before ``conv_seg``.
            use_dpg: build the DPG head (False: logits = conv_seg(dropout(linear_fuse(x)))).
            norm: norm of the ConvModules (linear_fuse, SIM): "BN" or "SyncBN".
            ignore_value, loss_weight, avg_non_ignore: cross-entropy settings.
        """
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"CGRSegHead expects 3 input features (strides 8/16/32), got {list(input_shape)}")
        if norm not in ("BN", "SyncBN"):
            raise ValueError(f"MODEL.CGRSEG.NORM must be 'BN' or 'SyncBN', got {norm!r}")
        items = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features: List[str] = [k for k, _ in items]
        self.in_channels: List[int] = [v.channels for _, v in items]
        self.common_stride = items[0][1].stride
        self.num_classes, self.channels = num_classes, channels
        self.ignore_value, self.loss_weight, self.avg_non_ignore = ignore_value, loss_weight, avg_non_ignore

        self.trans = RCMStack(next_repeat, sum(self.in_channels), neck_size, square_kernel_size, ratio, mlp_ratio)
        self.SIM = nn.ModuleList(FuseBlockMulti(c, channels, norm) for c in self.in_channels)
        self.meta = nn.ModuleList(
            RCM(c, dw_size, square_kernel_size, ratio, mlp_ratio) for c in self.in_channels)
        self.conv = nn.ModuleList(nn.Conv2d(channels, c, 1) for c in self.in_channels[:-1])
        self.linear_fuse = ConvNormAct(channels, channels, norm, groups=channels if is_dw else 1, act=True)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)
        self.lgc: Optional[DPGHead] = DPGHead(channels, channels) if use_dpg else None
        # Identity on the final stride-8 logits: a named module for feature taps (e.g. DSD's CSD
        # on "sem_seg_head.logits_tap"); no parameters, so the state-dict keys are unchanged.
        self.logits_tap = nn.Identity()

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        c = cfg.MODEL.CGRSEG
        check_in_features("MODEL.CGRSEG.IN_FEATURES", c.IN_FEATURES, input_shape)
        return {
            "input_shape": {f: input_shape[f] for f in c.IN_FEATURES},
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "channels": c.CHANNELS,
            "next_repeat": c.NEXT_REPEAT,
            "dw_size": c.DW_SIZE,
            "neck_size": c.NECK_SIZE,
            "square_kernel_size": c.SQUARE_KERNEL_SIZE,
            "ratio": c.RATIO,
            "mlp_ratio": c.MLP_RATIO,
            "is_dw": c.IS_DW,
            "dropout": c.DROPOUT,
            "use_dpg": c.USE_DPG,
            "norm": c.NORM,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "avg_non_ignore": cfg.MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE,
        }

    def decode_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """PPA + PCE + top-down SFR: features -> x (B, C, H/8, W/8), before ``linear_fuse``."""
        xs = [features[f] for f in self.in_features]
        context = pyramid_pool(xs)
        if self.training and context.shape[0] * context.shape[2] * context.shape[3] == 1:
            raise ValueError(
                f"CGRSegHead: training with batch 1 needs a pyramid-pool grid larger than 1x1 (BatchNorm "
                f"needs more than one value per channel), got input features {tuple(xs[-1].shape)}; use "
                f"inputs larger than 64 px or a batch of 2+")
        context = self.trans(context)
        contexts = context.split(self.in_channels, dim=1)
        x: Optional[torch.Tensor] = None
        for i in range(len(xs) - 1, -1, -1):
            local = xs[i]
            if x is not None:
                up = F.interpolate(x, size=local.shape[-2:], mode="bilinear", align_corners=False)
                local = local + self.conv[i](up)
            x = self.SIM[i](self.meta[i](local), contexts[i])
        return x

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Coarse classifier (+ DPG + final classifier): x (B, C, h, w) -> logits (B, K, h, w)."""
        coarse = self.conv_seg(self.dropout(self.linear_fuse(x)))
        if self.lgc is None:
            return coarse
        refined = self.lgc(x, spatial_gather(x, coarse)) + x
        return self.conv_seg(self.dropout(refined))

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Final logits at stride 8: (B, K, H/8, W/8), passed through ``logits_tap``."""
        return self.logits_tap(self.classify(self.decode_features(features)))

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
                ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        logits = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("CGRSegHead: targets (B, H, W) are required in training mode")
            return None, self.losses(logits, targets)
        # The output keeps the logits' memory format: on a channels-last model the upsample (and
        # a later argmax over classes) is ~3x faster in channels-last than in NCHW on CPU.
        size = (logits.shape[-2] * self.common_stride, logits.shape[-1] * self.common_stride)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False), {}


    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Cross-entropy of logits (B, K, h, w) upsampled to the labels (B, H, W)."""
        logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        loss = sem_seg_cross_entropy(logits, targets, self.ignore_value, self.avg_non_ignore)
        return {"loss_sem_seg": loss * self.loss_weight}
