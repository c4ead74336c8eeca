#!/usr/bin/env python
"""Training step of a config through segdet's Trainer and through detectron2's DefaultTrainer,
timed in one run, interleaved, on the same batches -> JSON with the ratio (segdet / detectron2).

  python tools/benchmark_trainer.py --config-file configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml \\
      --threads 2 --rounds 15 --steps 5 --warmup 3 --output output/bench/trainer_faster_rcnn.json

Both trainers are built from the same config, each with its own build_* methods (segdet's:
its optimizer and param groups, LR scheduler, checkpointer, hooks; DefaultTrainer: detectron2's),
with the same seed; the DefaultTrainer's model then gets a copy of the segdet model's state dict.
Their training loader is replaced by one fixed list of --batches batches, pulled once from the
training loader of one trainer (--batches-from, with no worker processes) or, with --synthetic,
synthetic images of --input-size with two GT boxes each (no dataset needed). Before its step i
each trainer gets batch i % N and torch's RNG seeded with SEED + i (proposal sampling), so step i
is the same computation for both; the first step's losses are reported per trainer and agree
(with --hooks not necessarily: segdet's ReseedHook, for SEED >= 0, reseeds before the first step
and after each periodic checkpoint, so its proposal sampling differs there).

Timed: ``trainer.run_step()`` (forward, backward, optimizer step, metrics into the EventStorage),
with --hooks also each hook's before_step/after_step (LR scheduler, writers, checkpoints and
segdet's extra hooks at their periods; before_train runs once, untimed; checkpoints go to a
temporary OUTPUT_DIR). Data loading is not timed (the batches are ready). After --warmup untimed
steps of each trainer, --rounds rounds of --steps steps of one trainer then --steps of the other
(the order alternating round by round, so that a drift in machine speed affects both alike).
A round's s/iter is its total time / --steps; the JSON has each trainer's median over rounds,
the ratio of the medians (the headline number, target <= 1.0), the per-round ratios with their
median / min / max, the optimizers' param-group counts, threads, seed and versions.
Measure on a quiet machine: on a busy one the per-round ratios spread widely.
"""
import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

import torch  # noqa: E402

DEFAULT_CONFIG = "configs/Samples/faster_rcnn_mnv2_fpn_trees.yaml"
NAMES = ("segdet", "detectron2")  # segdet.engine.Trainer, detectron2.engine.DefaultTrainer


def parse_args(argv=None):
    from segdet.utils.threads import thread_count

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help=f"default: {DEFAULT_CONFIG}")
    parser.add_argument("--threads", type=thread_count, default=2, help="torch CPU threads (fixed; default 2)")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation, batch order, step RNG")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each trainer first")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (both trainers each round)")
    parser.add_argument("--steps", type=int, default=5, help="steps of each trainer per round")
    parser.add_argument("--batches", type=int, default=4, help="size of the fixed list of batches (cycled)")
    parser.add_argument("--batches-from", choices=NAMES, default="segdet",
                        help="whose training loader (its mapper) provides the batches (default segdet)")
    parser.add_argument("--synthetic", action="store_true",
                        help="synthetic batches of --input-size (no dataset needed) instead of the training set")
    parser.add_argument("--input-size", type=int, nargs=2, default=(384, 384), metavar=("H", "W"),
                        help="--synthetic image size (default 384 384)")
    parser.add_argument("--hooks", action="store_true",
                        help="also time each trainer's hooks (before_step/after_step) around run_step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--verbose", action="store_true", help="detectron2's and segdet's INFO logs (model, hooks)")
    parser.add_argument("--output", default=None, help="JSON file (default: print only)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    for name in ("rounds", "steps", "batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


class FixedBatches:
    """A training "loader" that yields the same list of batches over and over."""

    def __init__(self, batches):
        self.batches = list(batches)

    def __iter__(self):
        return itertools.cycle(self.batches)

    def __len__(self):
        return len(self.batches)


def load_cfg(args, output_dir: str):
    from segdet.utils.config_io import load_config

    # ImageNet initialisation is not needed for timing (the weights are random, and the same for both)
    opts = ["MODEL.DEVICE", args.device, "MODEL.WEIGHTS", "", "MODEL.MOBILENET_V2.WEIGHTS", "",
            "SEED", str(args.seed)] + list(args.opts) + ["OUTPUT_DIR", output_dir]
    return load_config(args.config_file, opts)


def pull_batches(args, cfg):
    """The fixed list of batches: synthetic, or the first --batches of one trainer's training
    loader (no worker processes, its sampler seeded with SEED)."""
    from detectron2.utils.env import seed_all_rng

    if args.synthetic:
        from segdet.utils.synthetic import synthetic_batch

        h, w = args.input_size
        return [synthetic_batch(cfg, h, w, n=cfg.SOLVER.IMS_PER_BATCH, seed=args.seed + i) for i in range(args.batches)]
    from detectron2.engine import DefaultTrainer
    from segdet.engine import Trainer

    seed_all_rng(args.seed)
    loader_cfg = cfg.clone()
    loader_cfg.defrost()
    loader_cfg.DATALOADER.NUM_WORKERS = 0
    loader = (Trainer if args.batches_from == "segdet" else DefaultTrainer).build_train_loader(loader_cfg)
    return list(itertools.islice(iter(loader), args.batches))


def with_fixed_batches(trainer_cls, batches):
    """``trainer_cls`` whose training loader is ``FixedBatches(batches)`` (nothing else changed)."""

    class FixedBatchTrainer(trainer_cls):
        @classmethod
        def build_train_loader(cls, cfg):
            return FixedBatches(batches)

    FixedBatchTrainer.__name__ = FixedBatchTrainer.__qualname__ = f"FixedBatch{trainer_cls.__name__}"
    return FixedBatchTrainer


def build_trainers(cfg_by_name, batches, seed: int):
    from detectron2.engine import DefaultTrainer
    from detectron2.utils.env import seed_all_rng
    from segdet.engine import Trainer

    trainers = {}
    for name, cls in zip(NAMES, (Trainer, DefaultTrainer)):
        seed_all_rng(seed)
        trainers[name] = with_fixed_batches(cls, batches)(cfg_by_name[name])
    trainers["detectron2"].model.load_state_dict(trainers["segdet"].model.state_dict())
    return trainers


def state_sum(model) -> float:
    return float(sum(t.double().sum() for t in model.state_dict().values() if t.is_floating_point()))


def max_abs_diff(a, b) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].is_floating_point()
               and sa[k].numel())


class Runner:
    """Steps of one trainer as ``TrainerBase.train`` runs them, each step timed."""

    def __init__(self, trainer, seed: int, hooks: bool, device: str):
        from detectron2.utils.events import EventStorage

        self.trainer, self.seed, self.hooks, self.device = trainer, seed, hooks, device
        self.steps = 0
        trainer.iter = trainer.start_iter = 0
        trainer.storage = EventStorage(0)
        if hooks:
            with trainer.storage:
                trainer.before_train()

    def step(self) -> float:
        t = self.trainer
        t.iter = self.steps
        torch.manual_seed(self.seed + self.steps)  # the same proposal sampling for both trainers
        with t.storage:
            t.storage.iter = t.iter
            self._sync()
            start = time.perf_counter()
            if self.hooks:
                t.before_step()
            t.run_step()
            if self.hooks:
                t.after_step()
            self._sync()
            elapsed = time.perf_counter() - start
        self.steps += 1
        return elapsed

    def _sync(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def first_step_losses(self) -> dict:
        """The losses the trainer wrote at iteration 0."""
        history = self.trainer.storage.histories()
        return {k: h.values()[0][0] for k, h in sorted(history.items())
                if (k.startswith("loss") or k == "total_loss") and h.values() and h.values()[0][1] == 0}


def describe_batches(args, cfg, batches) -> dict:
    out = {"count": len(batches), "images_per_step": len(batches[0]),
           "source": "synthetic" if args.synthetic else f"{args.batches_from} training loader of {cfg.DATASETS.TRAIN[0]}",
           "image_sizes": [[list(x["image"].shape[-2:]) for x in b] for b in batches]}
    if all("instances" in x for b in batches for x in b):
        out["gt_boxes_per_image"] = [[len(x["instances"]) for x in b] for b in batches]
    return out


def versions() -> dict:
    import detectron2

    import segdet

    return {"torch": torch.__version__, "detectron2": detectron2.__version__,
            "segdet": getattr(segdet, "__version__", None), "python": platform.python_version()}


def quiet_logs() -> None:
    """detectron2's and segdet's loggers: warnings and errors only, to stderr. (At INFO, so that
    DefaultTrainer does not set up its own logging; it would print the whole model.)"""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    for name in ("detectron2", "segdet", "fvcore"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False


def run(args) -> dict:
    import segdet  # noqa: F401  (registers segdet's models, datasets)
    from segdet.utils.threads import set_threads

    set_threads(args.threads)
    if not args.verbose:
        quiet_logs()
    tmp = tempfile.mkdtemp(prefix="benchmark_trainer_")
    try:
        cfg_by_name = {name: load_cfg(args, os.path.join(tmp, name)) for name in NAMES}
        for name in NAMES:
            os.makedirs(cfg_by_name[name].OUTPUT_DIR, exist_ok=True)
        cfg = cfg_by_name["segdet"]
        batches = pull_batches(args, cfg)
        trainers = build_trainers(cfg_by_name, batches, args.seed)
        initial = {name: state_sum(t.model) for name, t in trainers.items()}
        runners = {name: Runner(t, args.seed, args.hooks, args.device) for name, t in trainers.items()}

        for name in NAMES:  # warm-up: the first steps allocate (momentum buffers, caches)
            for _ in range(args.warmup):
                runners[name].step()
        per_round = {name: [] for name in NAMES}
        order = []
        for r in range(args.rounds):
            names = NAMES if r % 2 == 0 else NAMES[::-1]
            order.append(names[0])
            for name in names:
                per_round[name].append(sum(runners[name].step() for _ in range(args.steps)) / args.steps)

        median = {name: statistics.median(v) for name, v in per_round.items()}
        ratios = [a / b for a, b in zip(per_round["segdet"], per_round["detectron2"])]
        trainers_out = {}
        for name, t in trainers.items():
            trainers_out[name] = {
                "class": type(t).__mro__[1].__module__ + "." + type(t).__mro__[1].__name__,
                "s_per_iter": {"median": median[name], "mean": statistics.mean(per_round[name]),
                               "min": min(per_round[name]), "max": max(per_round[name]),
                               "per_round": per_round[name]},
                "steps": runners[name].steps,
                "optimizer": type(t.optimizer).__name__,
                "param_groups": len(t.optimizer.param_groups),
                "hooks": [type(h).__name__ for h in t._hooks],
                "initial_state_sum": initial[name],
                "first_step_losses": runners[name].first_step_losses(),
            }
        return {
            "config_file": args.config_file,
            "opts": list(args.opts),
            "device": args.device,
            "threads": torch.get_num_threads(),
            "seed": args.seed,
            "timed": "run_step + hooks' before_step/after_step" if args.hooks else "run_step",
            "warmup_steps": args.warmup, "rounds": args.rounds, "steps_per_round": args.steps,
            "first_in_round": order,
            "batches": describe_batches(args, cfg, batches),
            "ratio": median["segdet"] / median["detectron2"],
            "ratio_per_round": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                                "values": ratios},
            "final_weights_max_abs_diff": max_abs_diff(trainers["segdet"].model, trainers["detectron2"].model),
            "trainers": trainers_out,
            "versions": versions(),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    from segdet.utils.errors import run_with_clear_errors

    run_with_clear_errors(main)
