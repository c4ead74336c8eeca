"""Resume helpers: metrics.json without repeated iterations, the config's optimizer settings,
the data position, reseeding at checkpoint boundaries."""
import itertools
import json
from types import SimpleNamespace

import pytest
import torch
from fvcore.common.param_scheduler import CosineParamScheduler

from detectron2.data.samplers import TrainingSampler
from detectron2.solver.lr_scheduler import LRMultiplier
from detectron2.utils.events import EventStorage

from segdet.engine.hooks import ReseedHook
from segdet.engine.resume import (MetricsJSONWriter, ResumableSampler, config_settings, drop_metrics_from,
                                  restore_config_settings)


def _iterations(path):
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()]


def test_drop_metrics_from_keeps_earlier_iterations_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "metrics.json"
    lines = [json.dumps({"iteration": i, "total_loss": 1.0 / (i + 1)}) for i in range(10)]
    path.write_text("\n".join(lines) + "\n" + '{"iteration": 10, "total_lo')  # killed mid-line
    assert drop_metrics_from(str(path), 6) == 5
    assert _iterations(path) == [0, 1, 2, 3, 4, 5]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert drop_metrics_from(str(path), 6) == 0
    assert drop_metrics_from(str(tmp_path / "absent.json"), 3) == 0


def test_metrics_writer_writes_into_the_rewritten_file(tmp_path):
    """detectron2's JSONWriter opens its file when built: its lines after the rewrite would go
    to the replaced file and be lost."""
    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps({"iteration": i, "total_loss": 1.0}) + "\n" for i in range(8)))
    writer = MetricsJSONWriter(str(path))
    drop_metrics_from(str(path), 4)
    with EventStorage(4) as storage:
        storage.put_scalar("total_loss", 0.5, smoothing_hint=False)
        writer.write()
    writer.close()
    assert _iterations(path) == [0, 1, 2, 3, 4]


def _optimizer(base_lr, weight_decay):
    params = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))]
    optimizer = torch.optim.SGD([{"params": params[:1], "lr": base_lr, "weight_decay": weight_decay},
                                 {"params": params[1:], "lr": base_lr / 10, "weight_decay": 0.0}],
                                lr=base_lr, momentum=0.9)
    return optimizer, LRMultiplier(optimizer, CosineParamScheduler(1.0, 0.0), max_iter=10)


def _checkpoint_of_a_run_with(base_lr, weight_decay, steps=3):
    optimizer, scheduler = _optimizer(base_lr, weight_decay)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer.state_dict(), scheduler.state_dict()


def test_a_changed_base_lr_and_weight_decay_win_over_the_checkpoint():
    saved_optimizer, saved_scheduler = _checkpoint_of_a_run_with(0.02, 1e-4)
    optimizer, scheduler = _optimizer(0.01, 5e-4)
    settings = config_settings(optimizer, scheduler)
    optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict(saved_scheduler)
    assert scheduler.base_lrs == [0.02, 0.002]  # what detectron2 alone resumes with

    changes = restore_config_settings(optimizer, scheduler, settings, base_lr=0.01)
    assert any("SOLVER.BASE_LR changed from 0.02 (checkpoint) to 0.01 (config)" in c for c in changes), changes
    assert any("'weight_decay' changed from 0.0001 (checkpoint) to 0.0005 (config)" in c for c in changes), changes
    assert scheduler.base_lrs == [0.01, 0.001] and scheduler.last_epoch == 3  # schedule position kept
    factor = CosineParamScheduler(1.0, 0.0)(3 / 10)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01 * factor, 0.001 * factor])
    assert optimizer.param_groups[0]["weight_decay"] == 5e-4
    optimizer.step()
    scheduler.step()
    factor = CosineParamScheduler(1.0, 0.0)(4 / 10)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01 * factor, 0.001 * factor])


def test_unchanged_settings_leave_the_checkpoint_state_untouched():
    saved_optimizer, saved_scheduler = _checkpoint_of_a_run_with(0.02, 1e-4)
    optimizer, scheduler = _optimizer(0.02, 1e-4)
    settings = config_settings(optimizer, scheduler)
    optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict(saved_scheduler)
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert restore_config_settings(optimizer, scheduler, settings, base_lr=0.02) == []
    assert [g["lr"] for g in optimizer.param_groups] == lrs


def test_base_lr_change_with_changed_group_factors_lists_the_groups():
    saved_optimizer, saved_scheduler = _checkpoint_of_a_run_with(0.02, 1e-4)
    optimizer, scheduler = _optimizer(0.02, 1e-4)
    optimizer.param_groups[1]["lr"] = optimizer.param_groups[1]["initial_lr"] = 0.004
    scheduler.base_lrs[1] = 0.004
    settings = config_settings(optimizer, scheduler)
    optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict(saved_scheduler)
    changes = restore_config_settings(optimizer, scheduler, settings, base_lr=0.02)
    assert changes == ["the base LRs of the optimizer's parameter groups (SOLVER.BASE_LR and its factors) "
                       "changed from [0.02, 0.002] (checkpoint) to [0.02, 0.004] (config)"]


def test_resumable_sampler_continues_the_index_stream():
    full = list(itertools.islice(iter(TrainingSampler(10, seed=3)), 40))
    sampler = ResumableSampler(TrainingSampler(10, seed=3))
    assert list(itertools.islice(iter(sampler), 40)) == full
    sampler.skip(14)
    assert list(itertools.islice(iter(sampler), 26)) == full[14:]


def test_reseed_hook_makes_the_numbers_after_a_checkpoint_independent_of_the_past():
    def draws_at(iteration, start_iter, history):
        torch.manual_seed(history)  # whatever happened before
        hook = ReseedHook(seed=5, period=4)
        hook.trainer = SimpleNamespace(iter=iteration, start_iter=start_iter)
        hook.before_step()
        return torch.rand(3)

    assert torch.equal(draws_at(8, 0, history=1), draws_at(8, 8, history=2))  # uninterrupted / resumed
    assert not torch.equal(draws_at(8, 0, history=1), draws_at(12, 0, history=1))
    assert not torch.equal(draws_at(9, 0, history=1), draws_at(9, 0, history=2))  # no reseed inside a period
    assert torch.equal(draws_at(9, 9, history=1), draws_at(9, 9, history=2))  # the first iteration of a run
