"""DistributedDataParallel wrapping that also works for CPU (gloo) training."""
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm

__all__ = ["create_ddp_model", "convert_sync_batchnorm_to_naive"]


def convert_sync_batchnorm_to_naive(module: nn.Module) -> nn.Module:
    """Replace every ``nn.SyncBatchNorm`` (GPU-only in torch) by detectron2's
    ``NaiveSyncBatchNorm``, which all-reduces statistics through ``torch.distributed`` and so
    also runs on CPU with gloo. Parameters and running statistics are kept, with their dtype
    and device."""
    if isinstance(module, nn.SyncBatchNorm):
        naive = NaiveSyncBatchNorm(module.num_features, eps=module.eps, momentum=module.momentum,
                                   affine=module.affine, track_running_stats=module.track_running_stats)
        like = next(module.parameters(), None)
        if like is None:
            like = next(module.buffers(), torch.empty(0))
        # the dtype and device first: loading float64 weights into float32 tensors would round them
        naive.to(device=like.device, dtype=like.dtype if like.is_floating_point() else None)
        naive.load_state_dict(module.state_dict())
        naive.train(module.training)
        return naive
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm_to_naive(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def create_ddp_model(model: nn.Module, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` itself for one process; otherwise DDP with ``device_ids`` set only for GPU
    models (a CPU model must not have them) and, on CPU, SyncBN made gloo-compatible."""
    if comm.get_world_size() == 1:
        return model
    first = next(model.parameters(), None)
    on_gpu = first is not None and first.device.type == "cuda"
    if not on_gpu:
        model = convert_sync_batchnorm_to_naive(model)
    return DistributedDataParallel(
        model,
        device_ids=[comm.get_local_rank()] if on_gpu else None,
        broadcast_buffers=False,
        find_unused_parameters=find_unused_parameters,
    )
