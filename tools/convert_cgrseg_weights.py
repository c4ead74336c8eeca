#!/usr/bin/env python
"""Convert official CGRSeg / CGRSeg+SSA (mmseg) or EfficientFormerV2 ImageNet checkpoints to segdet
weights; strip the SSA teacher branch from segdet checkpoints.

  # official CGRSeg-T ADE20K checkpoint (mmcv: 'state_dict' + pickled 'meta')
  python tools/convert_cgrseg_weights.py --trust-pickle cgrseg-t_ade20k_160k.pth cgrseg_t_segdet.pth
  # EfficientFormerV2-S1 ImageNet checkpoint (backbone initialisation for CGRSeg-T)
  python tools/convert_cgrseg_weights.py eformer_s1_450.pth eformer_s1_segdet.pth
  # official CGRSeg-B+SSA checkpoint, for inference only (teacher gt_* modules dropped)
  python tools/convert_cgrseg_weights.py --trust-pickle --drop-teacher cgrseg_b_ssa.pth cgrseg_b_ssa_deploy.pth
  # a segdet SSA training checkpoint -> deploy weights without the teacher branch
  python tools/convert_cgrseg_weights.py --drop-teacher output/model_final.pth deploy.pth

The output is ``{"model": state_dict}`` with ``backbone.*`` / ``sem_seg_head.*`` keys, for
``MODEL.WEIGHTS`` of projects/CGRSeg/configs/ADE20K/CGRSeg-{T,B,L}.yaml and projects/SSA/configs/ADE20K/CGRSeg-{B,L}-SSA.yaml. It is
written atomically (temporary file + rename). With --config-file the result is checked against the
model that config builds (no unexpected or shape-mismatched key; for a CGRSeg or segdet checkpoint
no missing key); with --drop-teacher that model is built with MODEL.SSA.WITH_TEACHER False.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="ImageNet checkpoints: the classifier and the ImageNet attention-bias tables are dropped "
               "(the segmentation bias tables start at zero, as in the official code).",
    )
    parser.add_argument("input", help="official checkpoint (.pth): mmseg CGRSeg or EfficientFormerV2 ImageNet")
    parser.add_argument("output", help="segdet checkpoint to write (.pth)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow full unpickling when the file holds Python objects besides tensors "
                             "(mmcv 'meta'); only for files you trust")
    parser.add_argument("--variant", choices=("S0", "S1", "S2", "L"), default=None,
                        help="EfficientFormerV2 variant of an ImageNet checkpoint (default: inferred)")
    parser.add_argument("--bias-resolution", type=int, default=512,
                        help="input size the segmentation bias tables are built for "
                             "(MODEL.EFFICIENTFORMER_V2.BIAS_RESOLUTION, default 512)")
    parser.add_argument("--drop-teacher", action="store_true",
                        help="drop the SSA teacher branch (gt_center_* keys): weights for inference / "
                             "MODEL.SSA.WITH_TEACHER False")
    parser.add_argument("--config-file", default=None,
                        help="optional segdet config: verify the converted keys/shapes against its model")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from segdet.engine.checkpoint import atomic_torch_save
    from segdet.modeling.cgrseg.convert import compare_state_dicts, convert_checkpoint, load_checkpoint_file

    obj = load_checkpoint_file(args.input, trust_pickle=args.trust_pickle)
    state, kind = convert_checkpoint(obj, variant=args.variant, bias_resolution=args.bias_resolution,
                                     drop_teacher=args.drop_teacher)
    if args.config_file:
        from detectron2.modeling import build_model
        from segdet.utils.config_io import load_config

        opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"]
        if args.drop_teacher:
            opts += ["MODEL.SSA.WITH_TEACHER", "False"]
        model = build_model(load_config(args.config_file, opts))
        missing, unexpected, mismatched = compare_state_dicts(state, model.state_dict())
        if kind == "imagenet":
            missing = [k for k in missing if not k.startswith("sem_seg_head.")]
        if missing or unexpected or mismatched:
            raise ValueError(f"converted weights do not fit {args.config_file}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, shape-mismatched {mismatched[:5]}")
    atomic_torch_save({"model": state}, args.output)
    print(f"{kind} checkpoint {args.input} -> {args.output}: {len(state)} tensors")
    return 0


if __name__ == "__main__":
    from segdet.utils.errors import run_with_clear_errors

    sys.exit(run_with_clear_errors(main))
