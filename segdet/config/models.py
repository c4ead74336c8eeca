"""Keys of the models: the backbones (``MODEL.MOBILENET_V2``, ``MODEL.EFFICIENTFORMER_V2``), the
semantic heads (``MODEL.SEM_SEG_HEAD`` additions and the DeepLab keys, ``MODEL.CGRSEG``) and the
SSA classifier (``MODEL.SSA``)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_backbone_config", "add_sem_seg_config", "add_cgrseg_config", "add_ssa_config"]


def add_backbone_config(cfg: CN) -> None:
    # Torchvision MobileNetV2 (+ optional FPN): a light ImageNet-initialised backbone for the
    # embedded sample data. WEIGHTS: path of torchvision's mobilenet_v2 state dict ("" = random).
    cfg.MODEL.MOBILENET_V2 = CN()
    cfg.MODEL.MOBILENET_V2.WEIGHTS = ""
    cfg.MODEL.MOBILENET_V2.OUT_FEATURES = ("m2", "m3", "m4", "m5")
    cfg.MODEL.MOBILENET_V2.NORM = "FrozenBN"
    cfg.MODEL.MOBILENET_V2.FREEZE_AT = 0

    # EfficientFormerV2 ("S0", "S1", "S2", "L"), the CGRSeg backbones.
    cfg.MODEL.EFFICIENTFORMER_V2 = CN()
    cfg.MODEL.EFFICIENTFORMER_V2.VARIANT = "S1"
    cfg.MODEL.EFFICIENTFORMER_V2.OUT_FEATURES = ("res2", "res3", "res4", "res5")
    # None = the variant's default stochastic-depth rate.
    cfg.MODEL.EFFICIENTFORMER_V2.DROP_PATH_RATE = None
    # Token grid the relative-position bias tables are built for (the official code: 512 input).
    cfg.MODEL.EFFICIENTFORMER_V2.BIAS_RESOLUTION = 512
    # "BN" or "SyncBN" (converted only under DDP).
    cfg.MODEL.EFFICIENTFORMER_V2.NORM = "BN"


def add_sem_seg_config(cfg: CN) -> None:
    # Cross-entropy reduction for segdet heads: True = mean over valid (non-ignored) pixels
    # (torch's ignore_index semantics); False = mmseg 0.27's mean over all pixels, ignored
    # pixels counted as zero loss (what the official CGRSeg / SSA code trains with).
    cfg.MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE = True
    # DeepLab heads (detectron2.projects.deeplab: "DeepLabV3PlusHead", and segdet's
    # "DeepLabV3PlusSSAHead"): the keys and defaults of detectron2's add_deeplab_config, set only
    # if absent, so add_deeplab_config may run before or after add_segdet_config. LOSS_TYPE:
    # "cross_entropy" or "hard_pixel_mining" (top 20% pixels; DeepLabV3PlusHead only). The
    # head's IN_FEATURES are sorted by stride: the last is ASPP's input, the others low-level
    # features, each projected to PROJECT_CHANNELS[i] (one entry per low-level feature);
    # PROJECT_FEATURES is not read by DeepLabV3PlusHead (kept for DeepLab's own configs).
    deeplab = {"LOSS_TYPE": "hard_pixel_mining", "PROJECT_FEATURES": ["res2"], "PROJECT_CHANNELS": [48],
               "ASPP_CHANNELS": 256, "ASPP_DILATIONS": [6, 12, 18], "ASPP_DROPOUT": 0.1,
               "USE_DEPTHWISE_SEPARABLE_CONV": False}
    for key, value in deeplab.items():
        if key not in cfg.MODEL.SEM_SEG_HEAD:
            cfg.MODEL.SEM_SEG_HEAD[key] = value


def add_cgrseg_config(cfg: CN) -> None:
    # CGRSeg head (SEM_SEG_HEAD.NAME "CGRSegHead"); defaults = CGRSeg-T.
    cfg.MODEL.CGRSEG = CN()
    # The three backbone maps the head reads (strides 8/16/32).
    cfg.MODEL.CGRSEG.IN_FEATURES = ("res3", "res4", "res5")
    cfg.MODEL.CGRSEG.CHANNELS = 128  # head width C (T 128, B/L 256)
    cfg.MODEL.CGRSEG.NEXT_REPEAT = 5  # number of RCMs in pyramid context extraction
    cfg.MODEL.CGRSEG.DW_SIZE = 11  # band kernel of the spatial-reconstruction RCMs
    cfg.MODEL.CGRSEG.NECK_SIZE = 11  # band kernel of the pyramid-context RCMs
    cfg.MODEL.CGRSEG.SQUARE_KERNEL_SIZE = 3  # local depthwise kernel of RCA
    cfg.MODEL.CGRSEG.RATIO = 1  # RCA group ratio (1 = fully depthwise strip convs)
    cfg.MODEL.CGRSEG.MLP_RATIO = 2  # RCM ConvMlp expansion
    cfg.MODEL.CGRSEG.IS_DW = True  # linear_fuse is a depthwise 1x1 conv (+ norm + ReLU)
    cfg.MODEL.CGRSEG.DROPOUT = 0.1  # Dropout2d before conv_seg
    # False removes the Dynamic Prototype Guided head (done when SSA is the classifier).
    cfg.MODEL.CGRSEG.USE_DPG = True
    # "BN" or "SyncBN" for the head's ConvModules (SyncBN only takes effect under DDP).
    cfg.MODEL.CGRSEG.NORM = "SyncBN"


def add_ssa_config(cfg: CN) -> None:
    # Semantic-and-spatial adaptive classifier wrapped around a base head.
    # Modules: segdet/modeling/ssa/ (classifier.py: SSAClassifier, losses.py: its loss terms).
    cfg.MODEL.SSA = CN()
    # SSA heads (SEM_SEG_HEAD.NAME "CGRSegSSAHead" / "SemSegFPNSSAHead", ssa/heads.py): build the
    # GT-guided teacher branch (gt_center_* modules, training only). False for inference / deploy
    # configs: the teacher's parameters are then absent from the model and its state dict (any
    # gt_* keys in loaded weights are ignored), and training keeps only the CE, coarse-CE and
    # Dice terms.
    cfg.MODEL.SSA.WITH_TEACHER = True
    # Dropout2d probability before the coarse classifier for base heads without their own
    # dropout (SemSegFPNSSAHead; mmseg heads use 0.1). CGRSegSSAHead uses MODEL.CGRSEG.DROPOUT.
    cfg.MODEL.SSA.DROPOUT = 0.1
    # Scale of the cosine-similarity logits (student and teacher classifiers).
    cfg.MODEL.SSA.TEMPERATURE = 15.0
    # Scale of the cosine similarities in the semantic-domain relation loss (softmax over classes).
    cfg.MODEL.SSA.RELATION_TEMPERATURE = 15.0
    # Response KD soft target: (1 - KD_SMOOTHNESS) * one-hot(GT) + KD_SMOOTHNESS * teacher softmax.
    cfg.MODEL.SSA.KD_SMOOTHNESS = 0.5
    # Response KD boundary mask: square dilation side, and width of the zeroed image frame (px at
    # the classifier's feature resolution).
    cfg.MODEL.SSA.EDGE_SIZE = 3
    cfg.MODEL.SSA.BORDER = 6
    # Term weights (a 0 weight skips the term); names map to loss_sem_seg, loss_ssa_coarse_ce,
    # loss_ssa_teacher_ce, loss_ssa_response_kd, loss_ssa_dice, loss_ssa_teacher_dice,
    # loss_ssa_semantic_kd, loss_ssa_spatial_kd. Defaults are the official values.
    cfg.MODEL.SSA.LOSS_WEIGHTS = CN()
    cfg.MODEL.SSA.LOSS_WEIGHTS.CE = 1.0
    cfg.MODEL.SSA.LOSS_WEIGHTS.COARSE_CE = 1.0
    cfg.MODEL.SSA.LOSS_WEIGHTS.TEACHER_CE = 1.0
    cfg.MODEL.SSA.LOSS_WEIGHTS.RESPONSE_KD = 1.0
    cfg.MODEL.SSA.LOSS_WEIGHTS.DICE = 1.0
    cfg.MODEL.SSA.LOSS_WEIGHTS.TEACHER_DICE = 1.0
    cfg.MODEL.SSA.LOSS_WEIGHTS.SEMANTIC_KD = 10.0
    cfg.MODEL.SSA.LOSS_WEIGHTS.SPATIAL_KD = 0.4
