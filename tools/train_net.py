#!/usr/bin/env python
"""Train or evaluate any segdet / Detectron2 model from a config file.

Examples:
  # train on the embedded sample data (prepare it once with tools/prepare_sample_data.py)
  python tools/train_net.py --config-file configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml

  # resume an interrupted run from OUTPUT_DIR/last_checkpoint
  python tools/train_net.py --config-file CONFIG --resume

  # evaluate weights (COCO AP or mIoU, chosen by the test dataset's evaluator_type); they must
  # fit the model exactly (no missing, unexpected or mis-shaped key)
  python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS path/to/model_final.pth

  # a detectron2 model-zoo .pkl: convert it once to a weights-only .pth (or pass --trust-pickle)
  python tools/convert_d2_pkl.py --trust-pickle R-50.pkl R-50.pth

  # 2 processes on CPU (gloo) or 8 GPUs
  python tools/train_net.py --config-file CONFIG --num-gpus 2 MODEL.DEVICE cpu
"""
import json
import logging
import os
import sys
import warnings

# Known, harmless deprecation noise from torch/detectron2 internals.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402

import segdet  # noqa: E402,F401  (registers everything)
from segdet.engine import AtomicCheckpointer, Trainer  # noqa: E402
from segdet.engine.launch import synchronized_main  # noqa: E402
from segdet.engine.run_lock import lock_output_dir, releases_output_dir_locks  # noqa: E402
from segdet.utils.config_io import load_config  # noqa: E402
from segdet.utils.errors import run_with_clear_errors  # noqa: E402
from segdet.utils.log_files import setup_loggers  # noqa: E402
from segdet.utils.threads import set_threads, thread_count  # noqa: E402

logger = logging.getLogger("segdet.train_net")


def build_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.description = "Train or evaluate a segdet / Detectron2 model."
    parser.add_argument("--eval-teacher", action="store_true",
                        help="for a distillation config: also evaluate the teacher (sanity check)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow plain unpickling (which can run arbitrary code) of MODEL.WEIGHTS, "
                             "DISTILL.TEACHER.WEIGHTS and the --resume checkpoint: .pkl model-zoo files and "
                             ".pth files holding Python objects besides tensors; sets MODEL.TRUST_PICKLE. "
                             "Only for files you trust; or convert them once with tools/convert_d2_pkl.py")
    parser.add_argument("--threads", type=thread_count, metavar="N",
                        help="CPU threads per process (torch.set_num_threads, OMP/MKL_NUM_THREADS); default: "
                             "torch's, one per core. On a shared or busy machine 1 is often fastest")
    return parser


def setup(args):
    set_threads(getattr(args, "threads", None))  # in each process (setup runs in every one)
    opts = list(args.opts)
    if args.eval_teacher:
        opts += ["DISTILL.EVAL_TEACHER", "True"]
    if getattr(args, "trust_pickle", False):
        opts += ["MODEL.TRUST_PICKLE", "True"]
    cfg = load_config(args.config_file, opts)
    if not args.eval_only:  # one training per OUTPUT_DIR; before default_setup writes into it
        lock_output_dir(cfg.OUTPUT_DIR)
    setup_loggers(cfg.OUTPUT_DIR, comm.get_rank())  # log.txt in plain text (no colour codes)
    default_setup(cfg, args)
    return cfg


def _json_safe(value):
    """Nested results with NaN/inf as None (strict JSON) and numbers as floats."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return number if number == number and abs(number) != float("inf") else None


def write_results(cfg, results, name="eval_results.json"):
    if comm.is_main_process() and results:
        path = os.path.join(cfg.OUTPUT_DIR, name)
        with open(path + ".tmp", "w") as f:
            json.dump(_json_safe(results), f, indent=2, allow_nan=False)
        os.replace(path + ".tmp", path)
        logger.info(f"Evaluation results written to {path}")


@releases_output_dir_locks
def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        if not cfg.MODEL.WEIGHTS and not args.resume:
            logger.warning("--eval-only with MODEL.WEIGHTS empty: evaluating the model's initial weights")
        # strict: weights that do not fit the model are an error, not a partly random model
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR, trust_pickle=cfg.MODEL.TRUST_PICKLE,
                           strict=True).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        write_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # DefaultTrainer keeps the final evaluation (run after the last iteration) here.
    results = getattr(trainer, "_last_eval_results", None)
    write_results(cfg, results)
    return results


def invoke_main() -> None:
    args = build_parser().parse_args()
    set_threads(args.threads)  # before launch, so spawned workers start with the OMP/MKL variables
    run_with_clear_errors(
        launch, synchronized_main(main), args.num_gpus, num_machines=args.num_machines,
        machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
