"""Keys of knowledge distillation (``DISTILL.*``: the teacher or teachers, the losses and their
warm-up, and the FeatureMSE, DRKD and DSD losses' own keys), and the completion of
``DISTILL.TEACHERS`` entries when a config is loaded."""
from detectron2.config import CfgNode as CN

__all__ = ["add_distill_config", "TEACHER_ENTRY_DEFAULTS", "complete_teacher_entries"]

#: the keys of one DISTILL.TEACHERS entry and their defaults
TEACHER_ENTRY_DEFAULTS = {"CONFIG_FILE": "", "WEIGHTS": "", "OPTS": [], "LOSSES": (), "LOSS_WEIGHTS": (), "TASK": ""}


def add_distill_config(cfg: CN) -> None:
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
    # with a 4:3 image (800 x 1067).
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
