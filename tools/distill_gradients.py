#!/usr/bin/env python
"""How hard each distillation term pulls on the student, against its own task losses: on a few
training batches of a distillation config, the gradient of each term on the student's parameters,
its size relative to the task gradient, and the cosine between the two -> table + JSON.

  python tools/distill_gradients.py --config-file projects/DRKD/configs/Samples/faster_rcnn_mnv2_fpn_trees_drkd.yaml \\
      --teacher-weights output/drkd/samples/teacher/model_final.pth --batches 4 --output grads.json

  # later in training: the student's weights of a run (e.g. a kd_compare arm's model_final.pth)
  python tools/distill_gradients.py --config-file CFG --teacher-weights T.pth \\
      --student-weights output/kd_compare/x/drkd/seed1/model_final.pth

Per batch, one training forward of the DistillationModel (distillation warm-up ended: every term
at its full configured weight) gives the student's task losses (every loss but
``loss_distill_*``) and the weighted distillation terms. For the task sum, every term and all terms
together, the gradient on two parameter groups of the student: ``backbone`` (the student's
``backbone.*``, FPN included, where the distillation taps of a detector sit) and ``student``
(every trainable student parameter). Reported per group: the gradient norm, the ratio of a term's
norm to the task norm, and the cosine of a term's gradient with the task gradient (0: it pulls
across the task's direction; < 0: against it). Values are means over --batches (also per batch in
the JSON). The distillation modules' own parameters (adapters, relation modules) are not the
student's and are left out of the groups. RetinaNet's loss normaliser is each batch's own
foreground count (what its moving average tracks in training). ``--student-weights`` takes a
distillation run's checkpoint (e.g. its ``model_final.pth``: the student and the trained
distillation modules) or the student's own weights, loaded strictly.
"""
import argparse
import itertools
import json
import os
import statistics
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

import torch  # noqa: E402

GROUPS = ("backbone", "student")


def parse_args(argv=None):
    from segdet.utils.threads import thread_count

    parser = argparse.ArgumentParser(prog="distill_gradients.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="a distillation config")
    parser.add_argument("--teacher-weights", metavar="FILE", help="DISTILL.TEACHER.WEIGHTS (default: the config's)")
    parser.add_argument("--student-weights", metavar="FILE",
                        help="the student's weights (default: its initialisation, e.g. ImageNet backbone)")
    parser.add_argument("--batches", type=int, default=4, help="training batches to average over (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, batch order and sampling (default 0)")
    parser.add_argument("--threads", type=thread_count, help="torch CPU threads")
    parser.add_argument("--output", metavar="FILE", help="write the JSON here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error(f"--batches: expected a positive number, got {args.batches}")
    return args


def load_student(model, path: str) -> None:
    """Load ``path`` strictly: a distillation run's checkpoint (``student.*`` and the distillation
    modules' keys) into the whole DistillationModel, a student's own weights into ``model.student``.

    Raises:
        FileNotFoundError / ValueError: naming --student-weights (missing, unexpected or
            mis-shaped keys, a pickled or corrupt file).
    """
    from segdet.distill.teacher import load_weights_strict

    try:  # which kind it is; a file that does not read gets load_weights_strict's clear error
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        state = {}
    state = state.get("model", state) if isinstance(state, dict) else {}
    whole = any(k.startswith("student.") for k in state)
    load_weights_strict(model if whole else model.student, path, what="distillation model" if whole else "student",
                        key="--student-weights")


def parameter_groups(model):
    """{group: [(name, parameter)]} of the student's trainable parameters."""
    named = [(n, p) for n, p in model.student.named_parameters() if p.requires_grad]
    return {"backbone": [(n, p) for n, p in named if n.startswith("backbone.")], "student": named}


def flat_gradient(loss: torch.Tensor, params) -> torch.Tensor:
    """The gradient of ``loss`` on ``params`` as one vector (zeros where it does not reach)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def batch_gradients(losses, groups):
    """{group: {"task": {"norm"}, term: {"norm", "ratio", "cosine"}}} of one batch's loss dict."""
    task_keys = [k for k in losses if not k.startswith("loss_distill_")]
    terms = {k[len("loss_distill_"):]: v for k, v in losses.items() if k.startswith("loss_distill_")}
    if not terms:
        raise ValueError("the model returned no loss_distill_* terms: is DISTILL.LOSSES empty?")
    parts = {"task": sum(losses[k] for k in task_keys), **terms}
    if len(terms) > 1:
        parts["all distillation"] = sum(terms.values())
    out = {}
    for group, named in groups.items():
        params = [p for _, p in named]
        task = flat_gradient(parts["task"], params)
        entry = {"task": {"norm": float(task.norm()), "value": float(parts["task"].detach())}}
        for name, value in parts.items():
            if name == "task":
                continue
            g = flat_gradient(value, params)
            entry[name] = {"norm": float(g.norm()), "value": float(value.detach()),
                           "ratio": float(g.norm() / task.norm()) if task.norm() > 0 else None,
                           "cosine": float(torch.nn.functional.cosine_similarity(g, task, dim=0))}
        out[group] = entry
    return out


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarize(per_batch):
    """The mean over batches of every number of :func:`batch_gradients`."""
    first = per_batch[0]
    return {group: {part: {key: _mean([b[group][part][key] for b in per_batch]) for key in first[group][part]}
                    for part in first[group]} for group in first}


def format_table(summary) -> str:
    rows = [("group", "part", "loss", "grad norm", "/ task", "cos to task")]
    for group, parts in summary.items():
        for part, e in parts.items():
            rows.append((group, part, f"{e['value']:.4g}", f"{e['norm']:.4g}",
                         "-" if part == "task" else f"{e['ratio']:.3g}",
                         "-" if part == "task" else f"{e['cosine']:+.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def measure(args):
    from detectron2.modeling import build_model
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage

    from segdet.engine import Trainer
    from segdet.utils.config_io import load_config
    from segdet.utils.errors import ConfigError

    opts = list(args.opts)
    if args.teacher_weights:
        opts += ["DISTILL.TEACHER.WEIGHTS", args.teacher_weights]
    cfg = load_config(args.config_file, opts + ["SEED", str(args.seed), "DATALOADER.NUM_WORKERS", "0"])
    if cfg.MODEL.META_ARCHITECTURE != "DistillationModel":
        raise ConfigError(f"{args.config_file}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}; "
                          "distill_gradients needs a distillation config (\"DistillationModel\")")
    seed_all_rng(args.seed)
    model = build_model(cfg)
    if args.student_weights:
        load_student(model, args.student_weights)
    model.train()
    if hasattr(model.student, "_ema_update"):
        # detectron2's dense detectors divide their losses by a moving average of the foreground
        # count that starts at 100; a fresh model would measure with that start value. Here: each
        # batch's own count, what the average tracks in training.
        model.student._ema_update = lambda name, value, initial_value, momentum=0.9: value
    groups = parameter_groups(model)
    loader = Trainer.build_train_loader(cfg)
    per_batch = []
    with EventStorage(start_iter=10 ** 9):  # past any distillation warm-up: every term at full weight
        for i, batch in enumerate(itertools.islice(iter(loader), args.batches)):
            torch.manual_seed(args.seed + i)  # proposal sampling, random filters
            per_batch.append(batch_gradients(model(batch), groups))
            print(f"[distill_gradients] batch {i + 1}/{args.batches}", flush=True)
    return {"config_file": args.config_file, "teacher_weights": cfg.DISTILL.TEACHER.WEIGHTS,
            "student_weights": args.student_weights or "(initialisation)", "seed": args.seed,
            "batches": args.batches, "images_per_batch": cfg.SOLVER.IMS_PER_BATCH, "overrides": list(args.opts),
            "groups": {g: len(named) for g, named in groups.items()},
            "mean": summarize(per_batch), "per_batch": per_batch}


def main(argv=None):
    from segdet.utils.errors import run_with_clear_errors

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_with_clear_errors(measure, args)
    print(format_table(result["mean"]))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
        print(f"[distill_gradients] wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
