"""The multi-task model through tools/train_net.py (train + both evaluations) and under 2-process
gloo DDP with a process whose batch lacks a task."""
import json
import os
from argparse import Namespace

import torch

from _tools import free_port, train_net_main_with_synthetic_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "projects/MultiTask/configs/faster_rcnn_semseg_fpn_mnv2_trees_street.yaml")
SMALL = ["MODEL.MOBILENET_V2.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
         "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32"]
SYNTHETIC = [
    "DATASETS.TRAIN", "('synthetic_det_train', 'synthetic_sem_seg_train')",
    "DATASETS.TEST", "('synthetic_det_val', 'synthetic_sem_seg_val')",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MIN_SIZE_TEST", "96", "INPUT.SEM_SEG.RESIZE_SCALE", "(128, 96)",
    "INPUT.CROP.SIZE", "(64, 64)", "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(128, 96)",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()", "SOLVER.BASE_LR", "0.001",
    "DATALOADER.NUM_WORKERS", "0", "TEST.VIS_NUM_IMAGES", "1", "SEED", "3",
]


def _args(output_dir, max_iter, extra=(), num_gpus=1):
    opts = SMALL + SYNTHETIC + ["OUTPUT_DIR", str(output_dir), "SOLVER.MAX_ITER", str(max_iter),
                                "SOLVER.CHECKPOINT_PERIOD", "100", *extra]
    return Namespace(config_file=CONFIG, resume=False, eval_only=False, eval_teacher=False, num_gpus=num_gpus,
                     num_machines=1, machine_rank=0, dist_url="auto", opts=opts)


def test_train_net_trains_the_joint_model_and_evaluates_both_tasks(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    results = train_net_main_with_synthetic_data(_args(out, 6), str(tmp_path / "data"))
    assert set(results) == {"synthetic_det_val", "synthetic_sem_seg_val"}
    assert {"AP", "AP50"} <= set(results["synthetic_det_val"]["bbox"])
    assert {"mIoU", "aAcc"} <= set(results["synthetic_sem_seg_val"]["sem_seg"])
    log = (out / "log.txt").read_text()
    assert "copypaste: Task: bbox" in log and "copypaste: Task: sem_seg" in log
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    trained = [m for m in metrics if "total_loss" in m]
    assert trained and all({"loss_sem_seg", "loss_cls", "loss_rpn_cls"} <= set(m) for m in trained)
    # each set was evaluated by its own task's evaluator, on its own mapper's images
    for name in ("synthetic_det_val", "synthetic_sem_seg_val"):
        assert list((out / "inference" / name / "visualizations").glob("*.png")), name


def _batch(rank: int):
    from segdet.utils.synthetic import synthetic_detection_input, synthetic_sem_seg_input

    if rank == 0:
        return [synthetic_detection_input(0), synthetic_detection_input(1)]
    return [synthetic_sem_seg_input(2), synthetic_sem_seg_input(3)]


def _gradients(model, batch, seed: int):
    """One training forward/backward of ``model`` (DDP-wrapped or not); {name: grad}, losses."""
    from detectron2.utils.events import EventStorage

    with EventStorage():
        torch.manual_seed(seed)
        losses = model(batch)
    sum(losses.values()).backward()
    inner = getattr(model, "module", model)
    grads = {n: p.grad.clone() for n, p in inner.named_parameters() if p.requires_grad}
    return grads, {k: float(v.detach()) for k, v in losses.items()}


def _build_model():
    from detectron2.modeling import build_model

    from segdet.utils.config_io import load_config

    torch.manual_seed(0)
    return build_model(load_config(CONFIG, SMALL)).train()


def _ddp_worker(result_dir: str):
    """Rank 0 trains on detection images only, rank 1 on label maps only, under DDP without
    find_unused_parameters."""
    from detectron2.utils import comm
    from torch.nn.parallel import DistributedDataParallel

    rank = comm.get_rank()
    ddp = DistributedDataParallel(_build_model(), find_unused_parameters=False)
    grads, losses = _gradients(ddp, _batch(rank), seed=10 + rank)
    torch.save({"grads": grads, "losses": losses}, os.path.join(result_dir, f"rank{rank}.pt"))
    comm.synchronize()  # leave together (gloo's teardown)
    torch.distributed.destroy_process_group()


def test_ddp_step_with_a_process_whose_batch_lacks_a_task(tmp_path):
    from detectron2.engine import launch

    launch(_ddp_worker, num_gpus_per_machine=2, dist_url=f"tcp://127.0.0.1:{free_port()}", args=(str(tmp_path),))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["losses"]["loss_sem_seg"] == 0.0 and r1["losses"]["loss_cls"] == 0.0
    assert r0["losses"]["loss_cls"] > 0 and r1["losses"]["loss_sem_seg"] > 0
    # both ranks hold the same averaged gradients, equal to the mean of each batch's gradients in
    # one process: every parameter took part in the all-reduce, the absent task adding zeros
    alone = [_gradients(_build_model(), _batch(rank), seed=10 + rank)[0] for rank in range(2)]
    for name, g in r0["grads"].items():
        torch.testing.assert_close(g, r1["grads"][name], rtol=0, atol=0)
        torch.testing.assert_close(g, (alone[0][name] + alone[1][name]) / 2, rtol=1e-4, atol=1e-6, msg=name)
    assert any(torch.count_nonzero(g) for n, g in r0["grads"].items() if n.startswith("sem_seg_head."))
    assert any(torch.count_nonzero(g) for n, g in r0["grads"].items() if n.startswith("detector."))
