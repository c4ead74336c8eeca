"""synchronized_main (segdet/engine/launch.py): detectron2 launch's main followed by a barrier and
the destruction of the process group, run in two gloo processes; with no process group, main alone."""
import os
import pickle
import time

import torch.distributed as dist

from detectron2.utils import comm

from segdet.engine.launch import SynchronizedMain, synchronized_main

from _tools import free_port

#: how long rank 0's main works after rank 1's has returned
SLOW_RANK_SECONDS = 1.0


def _work(rank: int, seconds: float, *, tag: str = "") -> dict:
    if rank == 0:
        time.sleep(seconds)
    return {"rank": rank, "tag": tag}


def _counting(calls: dict, name: str, fn):
    def counted(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return fn(*args, **kwargs)
    return counted


def _ddp_worker(out_dir: str) -> None:
    """Run by launch (itself through synchronized_main, as the tools do) in each process."""
    rank, calls = comm.get_rank(), {}
    synchronize, destroy = comm.synchronize, dist.destroy_process_group
    comm.synchronize = _counting(calls, "synchronize", synchronize)
    dist.destroy_process_group = _counting(calls, "destroy", destroy)
    try:
        start = time.monotonic()
        result = synchronized_main(_work)(rank, SLOW_RANK_SECONDS, tag="t")
        elapsed = time.monotonic() - start
    finally:
        comm.synchronize, dist.destroy_process_group = synchronize, destroy
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump({"result": result, "elapsed": elapsed, "calls": calls,
                     "initialized_after": dist.is_initialized()}, f)


def test_two_gloo_processes_wait_for_each_other_and_destroy_the_group(tmp_path):
    from detectron2.engine import launch

    # CPU only (conftest hides GPUs): launch picks gloo. The outer wrapper finds no group left.
    launch(synchronized_main(_ddp_worker), num_gpus_per_machine=2, dist_url=f"tcp://127.0.0.1:{free_port()}",
           args=(str(tmp_path),))
    ranks = []
    for r in range(2):
        with open(tmp_path / f"rank{r}.pkl", "rb") as f:
            ranks.append(pickle.load(f))
    assert [r["result"] for r in ranks] == [{"rank": 0, "tag": "t"}, {"rank": 1, "tag": "t"}]
    assert [r["calls"] for r in ranks] == [{"synchronize": 1, "destroy": 1}] * 2
    assert [r["initialized_after"] for r in ranks] == [False, False]
    # rank 1's main returned at once, but it left only with rank 0 (the barrier)
    assert ranks[1]["elapsed"] >= 0.9 * SLOW_RANK_SECONDS


def test_without_a_process_group_only_main_runs(monkeypatch):
    calls = []
    monkeypatch.setattr(comm, "synchronize", lambda *a, **k: calls.append("synchronize"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    assert not dist.is_initialized()
    assert synchronized_main(_work)(1, 0.0, tag="x") == {"rank": 1, "tag": "x"}
    assert calls == []


def test_the_wrapper_pickles_for_spawned_workers():
    wrapped = pickle.loads(pickle.dumps(synchronized_main(_work)))
    assert isinstance(wrapped, SynchronizedMain) and wrapped.main is _work
