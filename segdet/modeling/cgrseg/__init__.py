"""CGRSeg: the EfficientFormerV2 backbone, the Rectangular Self-Calibration Module (RCM), pyramid
context extraction and the Dynamic Prototype Guided (DPG) head, and the converter of the
official checkpoints. Importing registers ``build_efficientformer_v2_backbone`` (BACKBONE_REGISTRY)
and ``CGRSegHead`` (SEM_SEG_HEADS_REGISTRY).

  efficientformer_v2.py         the backbone (stages, builder)
  efficientformer_v2_blocks.py  its blocks (stem, FFN, attention + FFN, downsampling)
  efficientformer_v2_attention.py  the 4D attentions and their relative-position biases
  efficientformer_v2_layers.py  small shared layers (DropPath, conv + BN, in-place GELU)
  rcm.py                        RCM (rectangular self-calibration attention + ConvMlp)
  dpg.py                        DPG head (class prototypes guiding the final classifier)
  head.py                       CGRSegHead (SFR fusion, PCE, DPG, losses)
  convert.py                    official mmseg checkpoint -> segdet state dict
"""
from . import efficientformer_v2  # noqa: F401
from . import head  # noqa: F401
