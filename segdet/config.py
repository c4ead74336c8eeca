"""segdet's config keys.

``add_segdet_config(cfg)`` only *adds* keys (with defaults) to a Detectron2 ``CfgNode``; call it
after ``get_cfg()`` and before ``merge_from_file`` (yacs rejects unknown keys). Each area of the
toolbox owns one ``_add_*`` function below.

Names follow detectron2 (and its DeepLab project) where a key exists there: ``INPUT.CROP.*``,
``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``, ``SOLVER.POLY_LR_POWER`` / ``POLY_LR_CONSTANT_ENDING``
and the ``"WarmupPolyLR"`` schedule behave as they do there. Renamed and removed keys are refused
with their new name (:mod:`segdet.utils.config_renames`). README.md "Config keys" tables every
key below with its default (``tools/config_keys_table.py`` writes it).

Loss weights have one style: each loss's terms are weighted by keys inside that method's own node
(``MODEL.SSA.LOSS_WEIGHTS.*``, ``DISTILL.DRKD.W_*``, ``DISTILL.DSD.W_*``; a 0 weight skips a
term). ``DISTILL.LOSS_WEIGHTS`` is not a fourth weight style but an optional per-loss multiplier
on top of them (one factor per entry of ``DISTILL.LOSSES``, as ``tools/kd_compare.py`` uses to
scale a whole loss without editing its terms).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_segdet_config", "get_segdet_cfg", "TEACHER_ENTRY_DEFAULTS", "complete_teacher_entries"]

#: the keys of one DISTILL.TEACHERS entry and their defaults
TEACHER_ENTRY_DEFAULTS = {"CONFIG_FILE": "", "WEIGHTS": "", "OPTS": [], "LOSSES": (), "LOSS_WEIGHTS": (), "TASK": ""}


def add_segdet_config(cfg: CN) -> CN:
    """Add every segdet key to ``cfg`` in place (idempotent: a ``cfg`` that already has
    ``MODEL.CGRSEG`` is returned as it is) and return it."""
    if "CGRSEG" in cfg.MODEL:
        return cfg
    _add_input_config(cfg)
    _add_solver_config(cfg)
    _add_datasets_config(cfg)
    _add_test_config(cfg)
    _add_backbone_config(cfg)
    _add_sem_seg_config(cfg)
    _add_cgrseg_config(cfg)
    _add_ssa_config(cfg)
    _add_distill_config(cfg)
    _add_checkpoint_config(cfg)
    _add_best_checkpoint_config(cfg)
    _add_coco_eval_config(cfg)
    _add_multi_task_config(cfg)
    return cfg


def get_segdet_cfg() -> CN:
    """Detectron2's default config plus segdet's keys."""
    from detectron2.config import get_cfg

    return add_segdet_config(get_cfg())


def _add_input_config(cfg: CN) -> None:
    # Which dataset mapper the trainer uses: "default" (detectron2's DatasetMapper, detection)
    # or "sem_seg" (segdet's semantic-segmentation mapper with the mmseg-style pipeline).
    cfg.INPUT.DATASET_MAPPER_NAME = "default"
    # The sem_seg mapper's random crop is detectron2's INPUT.CROP (ENABLED, TYPE, SIZE; mmseg's
    # recipe: ENABLED True, TYPE "absolute", SIZE (512, 512) as (h, w)), retried (up to 10
    # times) while one class covers SINGLE_CATEGORY_MAX_AREA or more of the crop's valid pixels
    # (DeepLab's key and default; mmseg's cat_max_ratio, 0.75 in its ADE20K recipe). 1.0
    # disables the check.
    if "SINGLE_CATEGORY_MAX_AREA" not in cfg.INPUT.CROP:  # add_deeplab_config may have added it
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Semantic-segmentation training pipeline (mmseg's ADE20K recipe by default).
    cfg.INPUT.SEM_SEG = CN()
    # mmseg's keep-ratio resize: into (long, short) = RESIZE_SCALE * r, r ~ U[RESIZE_RATIO_RANGE]
    # (before the crop).
    cfg.INPUT.SEM_SEG.RESIZE_SCALE = (2048, 512)
    cfg.INPUT.SEM_SEG.RESIZE_RATIO_RANGE = (0.5, 2.0)
    cfg.INPUT.SEM_SEG.FLIP_PROB = 0.5
    # mmseg PhotoMetricDistortion (brightness ±32, contrast/saturation [0.5,1.5], hue ±18).
    cfg.INPUT.SEM_SEG.PHOTOMETRIC_DISTORTION = True
    # Test-time resize: keep-ratio into TEST_RESIZE_SCALE (long, short), then the segmentor pads
    # to its size divisibility.
    cfg.INPUT.SEM_SEG.TEST_RESIZE_SCALE = (2048, 512)


def _add_solver_config(cfg: CN) -> None:
    # "SGD" (detectron2's default) or "ADAMW".
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # PyTorch's fused optimizer kernel: one pass over parameters, gradients and momentum (about
    # 2.5x faster updates on the CPU, the same update rule). Where the torch build or the
    # parameters' device has no fused kernel, the default implementation is used.
    cfg.SOLVER.FUSED = True
    # Learning-rate multiplier for parameters whose name starts with one of HEAD_PREFIXES
    # (e.g. the semantic head: lr x10 in the CGRSeg recipe). Prefixes are matched on the full
    # parameter name, so a backbone module called "talking_head" is never caught by accident.
    cfg.SOLVER.HEAD_LR_MULTIPLIER = 1.0
    cfg.SOLVER.HEAD_PREFIXES = ("sem_seg_head.",)
    # --- Parameter-group rule (segdet/engine/optimizer.py) ---
    # "segdet": detectron2's WEIGHT_DECAY_NORM / WEIGHT_DECAY_BIAS / BIAS_LR_FACTOR, and
    # HEAD_LR_MULTIPLIER on HEAD_PREFIXES.
    # "mmcv": mmcv 1.x paramwise_cfg custom_keys (the official CGRSeg / SSA recipe); only
    # PARAMWISE_CUSTOM_KEYS applies (WEIGHT_DECAY_NORM/BIAS, BIAS_LR_FACTOR, HEAD_LR_MULTIPLIER
    # and HEAD_PREFIXES are not used): ((key, lr_mult, decay_mult), ...); a parameter whose name
    # contains keys takes the longest one (ties: alphabetically first), else base lr and decay.
    cfg.SOLVER.PARAMWISE_RULE = "segdet"
    cfg.SOLVER.PARAMWISE_CUSTOM_KEYS = ()
    # Poly schedule used when SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR", DeepLab's keys and
    # schedule (segdet/engine/lr_scheduler.py): lr = base * warmup(t) * (1 - t / MAX_ITER) ** POWER,
    # and once warm-up is over never below base * POLY_LR_CONSTANT_ENDING (a floor; mmcv's
    # min_lr instead rescales the curve to end at it: the same when 0). Set only if absent
    # (add_deeplab_config adds the same keys).
    if "POLY_LR_POWER" not in cfg.SOLVER:
        cfg.SOLVER.POLY_LR_POWER = 0.9
    if "POLY_LR_CONSTANT_ENDING" not in cfg.SOLVER:
        cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    # Passed to DistributedDataParallel (needed only by models that skip parameters in a step).
    cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS = False


def _add_datasets_config(cfg: CN) -> None:
    # Datasets declared in the config (no Python): name -> {TYPE: "sem_seg_folder" | "coco_json",
    # ...}; registered when the config is loaded (segdet/data/datasets/declared.py has the keys).
    cfg.DATASETS.DECLARE = CN(new_allowed=True)


def _add_test_config(cfg: CN) -> None:
    cfg.TEST.SEM_SEG = CN()
    # "whole": one forward on the full (padded) image; "slide": overlapping CROP_SIZE windows
    # every STRIDE pixels, logits averaged where windows overlap.
    cfg.TEST.SEM_SEG.MODE = "whole"
    cfg.TEST.SEM_SEG.CROP_SIZE = (512, 512)
    cfg.TEST.SEM_SEG.STRIDE = (341, 341)
    # Test-time augmentation of a semantic segmentor (segdet/modeling/meta_arch/sem_seg_tta.py),
    # mmseg's MultiScaleFlipAug: detectron2's switch TEST.AUG.ENABLED and TEST.AUG.FLIP (add the
    # horizontal flip of every scale) keep their meaning; detectron2's absolute MIN_SIZES/MAX_SIZE
    # do not apply. Instead each scale is INPUT.SEM_SEG.TEST_RESIZE_SCALE x ratio (mmseg's
    # img_ratios), run in TEST.SEM_SEG.MODE; the softmax of every augmentation is averaged.
    cfg.TEST.SEM_SEG.AUG_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    # Write a prediction-overlay PNG for the first N evaluated images (0 disables).
    cfg.TEST.VIS_NUM_IMAGES = 4
    # Boxes drawn in those overlays: score >= VIS_SCORE_THRESH; when none passes, the VIS_TOPK
    # highest-scoring ones, marked as below the threshold (0: draw none).
    cfg.TEST.VIS_SCORE_THRESH = 0.5
    cfg.TEST.VIS_TOPK = 5


def _add_backbone_config(cfg: CN) -> None:
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


def _add_sem_seg_config(cfg: CN) -> None:
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


def _add_cgrseg_config(cfg: CN) -> None:
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


def _add_ssa_config(cfg: CN) -> None:
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


def _add_distill_config(cfg: CN) -> None:
    cfg.DISTILL = CN()
    cfg.DISTILL.TEACHER = CN()
    # The teacher's own config file and weights (loaded strictly). A relative CONFIG_FILE is
    # resolved like _BASE_: relative to the yaml file that sets it, else the working directory,
    # else the repo root (segdet/utils/config_paths.py). A teacher run's own dump, the
    # config.yaml in its OUTPUT_DIR, works here, with WEIGHTS its model_final.pth.
    cfg.DISTILL.TEACHER.CONFIG_FILE = ""
    cfg.DISTILL.TEACHER.WEIGHTS = ""
    # Trailing KEY VALUE overrides applied to the teacher config, as a flat list, e.g. in yaml
    #   OPTS: ["MODEL.FPN.OUT_CHANNELS", 256, "INPUT.MIN_SIZE_TEST", 512]
    # or on the command line  DISTILL.TEACHER.OPTS "['MODEL.FPN.OUT_CHANNELS', 256]".
    # MODEL.DEVICE is always the student's.
    cfg.DISTILL.TEACHER.OPTS = []
    # The student is built from this config with META_ARCHITECTURE replaced by this name.
    cfg.DISTILL.STUDENT_META_ARCHITECTURE = "GeneralizedRCNN"
    # Evaluate the teacher too when running evaluation (sanity check of its weights).
    cfg.DISTILL.EVAL_TEACHER = False
    # Losses: names in DISTILL_LOSS_REGISTRY, and warm-up iterations. Each loss weights its own
    # terms (DISTILL.DRKD.W_*, DISTILL.DSD.W_*); LOSS_WEIGHTS, if given, is one extra multiplier
    # per entry of LOSSES applied on top of those (() = 1 for every loss).
    cfg.DISTILL.LOSSES = ()
    cfg.DISTILL.LOSS_WEIGHTS = ()
    cfg.DISTILL.WARMUP_ITERS = 0
    # Several teachers at once (replaces DISTILL.TEACHER and DISTILL.LOSSES when not empty):
    # name -> {CONFIG_FILE, WEIGHTS, OPTS, LOSSES, LOSS_WEIGHTS: as the keys above, for this
    # teacher; TASK: "" (every image) | "detection" | "sem_seg" (the teacher and its losses see
    # only the images that carry boxes / a label map)}, e.g.
    #   TEACHERS:
    #     DETECTOR: {CONFIG_FILE: "det.yaml", WEIGHTS: "det.pth", LOSSES: ["DRKD"], TASK: "detection"}
    #     SEGMENTOR: {CONFIG_FILE: "seg.yaml", WEIGHTS: "seg.pth", LOSSES: ["PSD", "CSD"], TASK: "sem_seg"}
    # Each teacher's losses are named "<name>_<loss>" (lower case); its cost is logged as
    # distill_teacher_<name>_ms.
    cfg.DISTILL.TEACHERS = CN(new_allowed=True)

    # FeatureMSE (feature imitation): pairs of student/teacher module names (forward-hook taps);
    # a 1x1 conv adapter is learned where channel counts differ.
    cfg.DISTILL.FEATURE_MSE = CN()
    cfg.DISTILL.FEATURE_MSE.STUDENT_TAPS = ()
    cfg.DISTILL.FEATURE_MSE.TEACHER_TAPS = ()

    # DRKD (pixel-wise + instance-wise relation distillation for detectors).
    cfg.DISTILL.DRKD = CN()
    # Module names (student / teacher) whose output is the FPN dict {level: (B, C, H, W)};
    # channels and strides are read from their output_shape().
    cfg.DISTILL.DRKD.STUDENT_TAP = "backbone"
    cfg.DISTILL.DRKD.TEACHER_TAP = "backbone"
    # Pixel-wise term: FPN levels and the GloRe node count per level (same length).
    # RetinaNet: ("p3", ..., "p7").
    cfg.DISTILL.DRKD.LEVELS = ("p2", "p3", "p4", "p5", "p6")
    cfg.DISTILL.DRKD.GLORE_MID = (64, 64, 256, 256, 256)
    # Instance terms: levels GT boxes are RoIAligned on (RetinaNet: ("p3", "p4")), k of k x k.
    cfg.DISTILL.DRKD.INST_LEVELS = ("p2", "p3")
    cfg.DISTILL.DRKD.ROI_SIZE = 3
    # "random_fc" (official two-stage: a fresh untrained Linear(d, M) per call, here seeded) |
    # "learned" (a trained permutation-equivariant gate, segdet's option) | "none" (official one-stage).
    cfg.DISTILL.DRKD.RELATION_FILTER = "random_fc"
    # Seed of the "random_fc" filter, drawn per (seed, iteration, level, image).
    cfg.DISTILL.DRKD.SEED = 0
    # Term weights; 0 disables a term (a disabled term builds no modules). Defaults: the released
    # two-stage code. RetinaNet, as the released single-stage code: W_INST 5e-3 (relation term,
    # RELATION_FILTER "none"), W_PIXEL 0, W_FORE 0; W_PIXEL 4e-3 (its commented-out line) switches
    # the pixel term on, an extension.
    cfg.DISTILL.DRKD.W_PIXEL = 1e-3
    cfg.DISTILL.DRKD.W_INST = 4e-3
    cfg.DISTILL.DRKD.W_FORE = 2.4e-3
    # How the un-squared L2 norms of the terms are normalised:
    #  "official": as the DRKD code. A norm grows as sqrt(its element count), so the official
    #    weights mean what they mean only at COCO scale (the reference shape below).
    #  "scale_aware": each norm divided by sqrt(its element count / the count at the reference
    #    shape): independent of the input size and images per device, and equal to "official"
    #    at the reference shape. Pixel term, level of stride s: B x C x H x W against
    #    REF_IMAGES_PER_DEVICE x REF_CHANNELS x ceil(H_ref/s) x ceil(W_ref/s). Instance terms,
    #    per image: M_b x C x k x k against M_b x REF_CHANNELS x 3 x 3 (the image's own instance
    #    count M_b: it is content, not size, and does not change with the input size).
    cfg.DISTILL.DRKD.NORMALIZATION = "official"
    # Reference shape: the padded (H, W) input and the FPN channels. 800 x 1216 is a COCO 3:2
    # image (640 x 427, resized to 800 x 1199, padded to 32), and any 2-image batch pairing one
    # with a 4:3 image (800 x 1067); the shape of the spec's cost figures (spec A.9).
    cfg.DISTILL.DRKD.REF_INPUT_SIZE = (800, 1216)
    cfg.DISTILL.DRKD.REF_CHANNELS = 256
    # Images per device at which the batch-size-invariant terms equal the official ones (both
    # normalisations).
    cfg.DISTILL.DRKD.REF_IMAGES_PER_DEVICE = 2
    # GloRe output BN gamma = 0 (identity at init); divide GloRe node features by H*W.
    cfg.DISTILL.DRKD.GLORE_ZERO_INIT_BN = False
    cfg.DISTILL.DRKD.GLORE_NORMALIZE = False
    # Teacher-side GloRe / relation modules not trained (ablation; official: trained).
    cfg.DISTILL.DRKD.FREEZE_TEACHER_SIDE = False
    # The drop-ins of segdet/distill/drkd/fast.py (same values and gradients, fewer multiply-adds).
    cfg.DISTILL.DRKD.FAST = False

    # DSD (pixel-wise + category-wise similarity distillation for segmentors).
    # Losses "PSD" and "CSD" in DISTILL.LOSSES. No parameters.
    cfg.DISTILL.DSD = CN()
    # PSD: student / teacher module names (shallow to deep) whose outputs give the attention
    # maps; a tap whose output is a dict (a whole backbone) contributes its tensor values, largest
    # spatial area first (insertion order among equal areas). Both sides must give the same count.
    cfg.DISTILL.DSD.STUDENT_LAYERS = ()
    cfg.DISTILL.DSD.TEACHER_LAYERS = ()
    cfg.DISTILL.DSD.PAIRS = "adjacent"  # residuals of "adjacent" layers | "all" pairs
    # Size every PSD attention map is resized to: "student_logits" (the STUDENT_LOGITS tap's
    # spatial size) or "largest" (the largest student layer map).
    cfg.DISTILL.DSD.PSD_RESIZE_TO = "student_logits"
    cfg.DISTILL.DSD.W_PSD = 1000.0
    # CSD: module names whose output is the pre-upsample logits (B, K, h, w). CGRSegHead and the
    # SSA heads pass their final logits (stride 8 for CGRSeg) through the Identity module
    # "logits_tap" (for SSA heads: the SSA output O, not the coarse conv_seg mask). Detectron2's
    # SemSegFPNHead has no such module: use "sem_seg_head.predictor" there.
    cfg.DISTILL.DSD.STUDENT_LOGITS = "sem_seg_head.logits_tap"
    cfg.DISTILL.DSD.TEACHER_LOGITS = "sem_seg_head.logits_tap"
    cfg.DISTILL.DSD.CSD_FORM = "paper"  # "paper" (softmax over classes) | "cirkd" (over space)
    cfg.DISTILL.DSD.TAU = 4.0
    cfg.DISTILL.DSD.CSD_POOL = 2  # average-pool kernel (= stride, ceil mode) on the logits; 1 = none
    cfg.DISTILL.DSD.W_CSD = 100.0
    # Both terms are means over the batch (batch-size invariant in either mode).
    #  "official": as defined. PSD = cosine distance / N (N positions of the compared maps) falls
    #    as 1/N on larger inputs; paper-form CSD (a mean of cosines) is size invariant; the
    #    "cirkd" CSD falls as 1/N'^2 (N' positions after CSD_POOL).
    #  "scale_aware": PSD x N / N_ref and "cirkd" CSD x (N'/N'_ref)^2 (paper CSD unchanged):
    #    independent of the input size, equal to "official" at REF_MAP_SIZE.
    cfg.DISTILL.DSD.NORMALIZATION = "official"
    # (h, w) of the compared maps / student logits at the reference: CIRKD's Cityscapes DSD run
    # (512 x 1024 crops, output stride 8), where W_PSD 1000 was used.
    cfg.DISTILL.DSD.REF_MAP_SIZE = (64, 128)


def _add_checkpoint_config(cfg: CN) -> None:
    # Allow plain (code-executing) unpickling of MODEL.WEIGHTS, DISTILL.TEACHER.WEIGHTS and the
    # --resume checkpoint: .pkl files and .pth files holding Python objects besides tensors.
    # Only for files of trusted origin (tools/train_net.py --trust-pickle sets it); otherwise
    # convert them once with tools/convert_d2_pkl.py.
    cfg.MODEL.TRUST_PICKLE = False


def _add_best_checkpoint_config(cfg: CN) -> None:
    # Keep OUTPUT_DIR/model_best.pth: the weights of the evaluation (every TEST.EVAL_PERIOD
    # iterations, which must then be > 0, and at the end) with the best METRIC so far.
    cfg.SOLVER.BEST_CHECKPOINT = CN()
    cfg.SOLVER.BEST_CHECKPOINT.ENABLED = False
    # The metric's name as in metrics.json, e.g. "bbox/AP50" ("<dataset>/bbox/AP50" when
    # DATASETS.TEST has several sets). "" = the first test set's main metric: "bbox/AP" (coco) or
    # "sem_seg/mIoU" (sem_seg).
    cfg.SOLVER.BEST_CHECKPOINT.METRIC = ""
    # "max": higher is better; "min": lower is better.
    cfg.SOLVER.BEST_CHECKPOINT.MODE = "max"


def _add_coco_eval_config(cfg: CN) -> None:
    # What computes COCO AP (segdet/evaluation/coco_evaluation.py): "faster_coco_eval" (its C++
    # COCOeval_faster: the same numbers, faster), "pycocotools" (detectron2's evaluator as it is),
    # or "auto": faster-coco-eval when it is installed, else pycocotools.
    cfg.TEST.COCO_EVAL_IMPL = "auto"


def _add_multi_task_config(cfg: CN) -> None:
    # MultiTaskModel (MODEL.META_ARCHITECTURE "MultiTaskModel", segdet/modeling/multi_task/): one
    # backbone (MODEL.BACKBONE), a detection branch built from the usual MODEL.RPN / ROI_HEADS or
    # MODEL.RETINANET keys, and a semantic head from MODEL.SEM_SEG_HEAD.
    cfg.MODEL.MULTI_TASK = CN()
    # "GeneralizedRCNN" (Faster R-CNN's RPN + ROI heads), "RetinaNet", or "" (no detection branch).
    cfg.MODEL.MULTI_TASK.DETECTOR = "GeneralizedRCNN"
    # Build the semantic head (MODEL.SEM_SEG_HEAD.NAME).
    cfg.MODEL.MULTI_TASK.SEM_SEG = True
    # Each task's losses are multiplied by its weight.
    cfg.MODEL.MULTI_TASK.DETECTION_LOSS_WEIGHT = 1.0
    cfg.MODEL.MULTI_TASK.SEM_SEG_LOSS_WEIGHT = 1.0
    # Outputs computed at inference for an image of no particular dataset (tools/predict.py); the
    # images of a test set get their set's task only.
    cfg.MODEL.MULTI_TASK.TEST_TASKS = ("detection", "sem_seg")
    # Training sets of several tasks (INPUT.DATASET_MAPPER_NAME "multi_task"): each set's images go
    # through its task's mapper (by the set's evaluator_type: "sem_seg" -> the semantic mapper with
    # INPUT.SEM_SEG / INPUT.CROP; otherwise the detection mapper with INPUT.MIN_SIZE_TRAIN ..., no
    # crop), and each batch holds images of one task (and one aspect-ratio group).
    cfg.DATALOADER.GROUP_BY_TASK = True
    # Share of the training images drawn from each DATASETS.TRAIN set (one number per set, any
    # scale; () = in proportion to the sets' sizes). Any model and mapper can use it.
    cfg.DATASETS.TRAIN_SAMPLING_RATIOS = ()


def complete_teacher_entries(cfg: CN, source: str = "config") -> None:
    """Give every ``DISTILL.TEACHERS.<name>`` entry of ``cfg`` all its keys (defaults for the
    missing ones, so that command-line overrides can set them) and refuse unknown keys and tasks
    (:class:`~segdet.utils.errors.ConfigError` naming ``source``)."""
    from segdet.utils.errors import ConfigError

    for name, entry in cfg.DISTILL.TEACHERS.items():
        where = f"{source}: DISTILL.TEACHERS.{name}"
        if not isinstance(entry, CN):
            raise ConfigError(f"{where} must be a mapping of {sorted(TEACHER_ENTRY_DEFAULTS)}, got {entry!r}")
        unknown = sorted(set(entry) - set(TEACHER_ENTRY_DEFAULTS))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; expected some of {sorted(TEACHER_ENTRY_DEFAULTS)}")
        for key, default in TEACHER_ENTRY_DEFAULTS.items():
            if key not in entry:
                entry[key] = default
