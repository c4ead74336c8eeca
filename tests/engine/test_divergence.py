"""A NaN/inf loss ends training with one line: iteration, non-finite losses, last checkpoint."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detectron2.engine import SimpleTrainer, TrainerBase
from detectron2.utils.events import EventStorage

from segdet.engine import Trainer
from segdet.utils.errors import TrainingDivergedError, user_error_message


class Losses(nn.Module):
    def __init__(self, **values):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.values = values

    def forward(self, batch):
        return {name: self.w * value for name, value in self.values.items()}


def _step(output_dir, iteration, **losses):
    """Trainer.run_step on detectron2's real SimpleTrainer (a full Trainer takes seconds to build)."""
    trainer = Trainer.__new__(Trainer)
    TrainerBase.__init__(trainer)
    model = Losses(**losses)
    trainer._trainer = SimpleTrainer(model, [[{}]] * 2, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.cfg = SimpleNamespace(OUTPUT_DIR=str(output_dir))
    trainer.iter = iteration
    with EventStorage(iteration):
        trainer.run_step()


def test_non_finite_losses_are_named_with_the_iteration_and_no_checkpoint(tmp_path):
    with pytest.raises(TrainingDivergedError) as info:
        _step(tmp_path, 7, loss_cls=float("nan"), loss_box_reg=0.5, loss_rpn_loc=float("inf"))
    message = user_error_message(info.value)
    assert message == ("TrainingDivergedError: training diverged at iteration 7: non-finite loss_cls, "
                       "loss_rpn_loc; last checkpoint: none (none was saved before; try a lower "
                       "SOLVER.BASE_LR or longer warm-up)")
    assert isinstance(info.value, FloatingPointError)  # what detectron2 raised, for code catching it


def test_the_last_checkpoint_is_named(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000019.pth")
    with pytest.raises(TrainingDivergedError) as info:
        _step(tmp_path, 23, loss_sem_seg=float("-inf"))
    message = user_error_message(info.value)
    assert "iteration 23: non-finite loss_sem_seg;" in message
    assert f"last checkpoint: {tmp_path / 'model_0000019.pth'} (continue from it with --resume" in message
    assert "\n" not in message


def test_finite_losses_train_on(tmp_path):
    _step(tmp_path, 3, loss_cls=0.5)
