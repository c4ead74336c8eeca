"""Training does its job (slow): on the synthetic segmentation set, Semantic-FPN and CGRSeg-T
lower their loss and raise mIoU well above the untrained model's, seeded."""
import json
import os
from argparse import Namespace

import pytest

from _tools import REPO_ROOT, train_net_main_with_synthetic_data

CONFIGS = {
    "semantic_fpn": os.path.join(REPO_ROOT, "configs/Samples/semseg_fpn_mnv2_street.yaml"),
    "cgrseg_t": os.path.join(REPO_ROOT, "projects/CGRSeg/configs/Samples/cgrseg_t_street.yaml"),
}
OPTS = [
    "MODEL.MOBILENET_V2.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0", "SEED", "1",
    "DATASETS.TRAIN", "('synthetic_sem_seg_train',)", "DATASETS.TEST", "('synthetic_sem_seg_train',)",
    "INPUT.SEM_SEG.RESIZE_SCALE", "(128, 96)", "INPUT.CROP.SIZE", "(96, 96)", "INPUT.SEM_SEG.TEST_RESIZE_SCALE", "(128, 96)",
    "TEST.VIS_NUM_IMAGES", "0", "SOLVER.WARMUP_ITERS", "5", "SOLVER.CHECKPOINT_PERIOD", "1000",
]


def _train_net(config, out, data, max_iter, eval_only=False):
    args = Namespace(config_file=config, resume=False, eval_only=eval_only, eval_teacher=False, num_gpus=1,
                     num_machines=1, machine_rank=0, dist_url="auto",
                     opts=OPTS + ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", str(max_iter)])
    return train_net_main_with_synthetic_data(args, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_training_lowers_the_loss_and_raises_miou(name, tmp_path):
    """The images are the (small, easy) training set itself: this checks that the optimisation
    works, not that it generalises."""
    data = str(tmp_path / "data")
    before = _train_net(CONFIGS[name], tmp_path / "untrained", data, 1, eval_only=True)["sem_seg"]["mIoU"]
    after = _train_net(CONFIGS[name], tmp_path / "trained", data, 120)["sem_seg"]["mIoU"]
    losses = [json.loads(line)["total_loss"] for line in (tmp_path / "trained" / "metrics.json").read_text().splitlines()
              if "total_loss" in line]
    assert losses[-1] < 0.7 * losses[0], losses
    assert after > before + 20 and after > 50, (before, after)
