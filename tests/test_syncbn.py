"""SyncBN in the CGRSeg backbones (MODEL.EFFICIENTFORMER_V2.NORM "SyncBN", the official setting:
its EfficientFormerV2 converts every BatchNorm to SyncBatchNorm).

One process: nn.SyncBatchNorm falls back to plain BatchNorm (same outputs, gradients and running
statistics). Two gloo processes (CPU DDP, where segdet's create_ddp_model swaps in detectron2's
NaiveSyncBatchNorm): each rank's output on its half of the batch is the plain-BN backbone's
output on the whole batch, i.e. the normalisation uses the statistics of the concatenated batch.
"""
import os

import pytest
import torch
from torch import nn

from detectron2.modeling import build_backbone, build_model

from segdet.engine.ddp import convert_sync_batchnorm_to_naive, create_ddp_model
from segdet.utils.config_io import load_config
from segdet.utils.synthetic import synthetic_batch

from _tools import cgrseg_ade20k_config, free_port

SYNC = (nn.SyncBatchNorm,)


def _backbone(variant: str = "T", norm: str = "SyncBN", config: str = ""):
    cfg = load_config(config or cgrseg_ade20k_config(variant), ["MODEL.DEVICE", "cpu", "MODEL.EFFICIENTFORMER_V2.NORM", norm])
    return build_backbone(cfg)


def _count(module: nn.Module, types) -> int:
    return sum(isinstance(m, types) for m in module.modules())


@pytest.mark.parametrize("variant,expected", [("T", 95), ("B", 138)])
def test_every_backbone_bn_is_sync_in_the_configs(variant, expected):
    cfg = load_config(cgrseg_ade20k_config(variant), ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.EFFICIENTFORMER_V2.NORM == "SyncBN"
    backbone = build_backbone(cfg)
    assert _count(backbone, SYNC) == expected
    assert _count(backbone, nn.modules.batchnorm._BatchNorm) == expected  # no plain BN left
    assert _count(_backbone(variant, "BN"), SYNC) == 0


def _randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial affine parameters and running statistics (all BNs start at 1 / 0 otherwise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g, dtype=m.running_mean.dtype))
                m.running_var.copy_(1 + torch.rand(m.running_var.shape, generator=g, dtype=m.running_var.dtype))


def _forward_backward(model: nn.Module, x: torch.Tensor):
    out = model(x)
    sum(v.square().mean() for v in out.values()).backward()
    return out


def test_one_process_syncbn_is_plain_bn():
    torch.manual_seed(0)
    sync = _backbone("T", "SyncBN").double().train()
    _randomise_norms(sync)
    plain = _backbone("T", "BN").double().train()
    plain.load_state_dict(sync.state_dict())
    start = sync.state_dict()["patch_embed.1.running_mean"].clone()
    x = torch.randn(2, 3, 32, 64, dtype=torch.float64)
    out_sync, out_plain = _forward_backward(sync, x), _forward_backward(plain, x)
    for k in out_plain:
        torch.testing.assert_close(out_sync[k], out_plain[k], rtol=1e-12, atol=1e-12)
    grads = dict(plain.named_parameters())
    for name, p in sync.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-10, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
    state = plain.state_dict()
    for name, v in sync.state_dict().items():  # running statistics updated alike
        torch.testing.assert_close(v, state[name], rtol=1e-12, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
    assert not torch.allclose(sync.state_dict()["patch_embed.1.running_mean"], start)  # they were updated


def test_one_process_cgrseg_t_trains_with_syncbn():
    """The whole CGRSeg-T of the config (SyncBN backbone and head) takes a training step on CPU."""
    cfg = load_config(cgrseg_ade20k_config("T"), ["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
    model = build_model(cfg).train()
    assert _count(model, SYNC) > 95
    losses = model(synthetic_batch(cfg, 64, 64, n=2))
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.patch_embed[1].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ two processes

def _ddp_worker(rank: int, port: int, config: str, tmp: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        init = torch.load(os.path.join(tmp, "init.pt"))
        model = _backbone(norm="SyncBN", config=config).double().train()
        # What create_ddp_model does on CPU (SyncBatchNorm -> NaiveSyncBatchNorm). The conversion
        # builds float32 norms, so this float64 model is cast again and its weights reloaded.
        model = convert_sync_batchnorm_to_naive(model).double()
        model.load_state_dict(init)
        ddp = create_ddp_model(model)
        x = torch.load(os.path.join(tmp, "x.pt"))[2 * rank: 2 * rank + 2]
        out = _forward_backward(ddp, x)
        net = ddp.module
        torch.save({"out": {k: v.detach() for k, v in out.items()},
                    "grads": {n: p.grad for n, p in net.named_parameters()},
                    "state": net.state_dict(),
                    "naive": sum(type(m).__name__ == "NaiveSyncBatchNorm" for m in net.modules())},
                   os.path.join(tmp, f"rank{rank}.pt"))
        torch.distributed.barrier()  # leave together (gloo teardown)
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_syncbn_uses_the_statistics_of_the_whole_batch(tmp_path):
    config = cgrseg_ade20k_config("T")
    torch.manual_seed(0)
    sync = _backbone(norm="SyncBN", config=config).double()
    _randomise_norms(sync)
    init = {k: v.clone() for k, v in sync.state_dict().items()}
    torch.save(init, tmp_path / "init.pt")
    x = torch.randn(4, 3, 32, 64, dtype=torch.float64)
    x[2:] = 3 * x[2:] + 1  # the halves differ: per-rank statistics would not do
    torch.save(x, tmp_path / "x.pt")
    torch.multiprocessing.spawn(_ddp_worker, args=(free_port(), config, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["naive"] for r in ranks] == [95, 95]

    plain = _backbone(norm="BN", config=config).double().train()
    plain.load_state_dict(init)
    ref = _forward_backward(plain, x)
    for k, v in ref.items():
        for r in range(2):
            torch.testing.assert_close(ranks[r]["out"][k], v[2 * r: 2 * r + 2].detach(), rtol=1e-9, atol=1e-9,
                                       msg=lambda m, n=f"{k} rank {r}": f"{n}: {m}")
    # DDP averages the ranks' gradients of their half-batch means: the whole-batch mean's gradient.
    for name, p in plain.named_parameters():
        for r in range(2):
            torch.testing.assert_close(ranks[r]["grads"][name], p.grad, rtol=1e-7, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
    # Running means are those of the whole batch. (Running variances: detectron2's
    # NaiveSyncBatchNorm tracks the biased batch variance, BatchNorm the unbiased one.)
    state = plain.state_dict()
    for name, v in ranks[0]["state"].items():
        if name.endswith("running_mean"):
            torch.testing.assert_close(v, state[name], rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")
            torch.testing.assert_close(ranks[1]["state"][name], v, rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
    # Per-rank statistics would give another output (the test can fail).
    local = _backbone(norm="BN", config=config).double().train()
    local.load_state_dict(init)
    assert not torch.allclose(local(x[:2])["res5"], ref["res5"][:2], atol=1e-6)


def test_conversion_to_naive_sync_bn_keeps_dtype_and_exact_values():
    sync = torch.nn.SyncBatchNorm(4).double()
    with torch.no_grad():
        sync.weight.copy_(torch.rand(4, dtype=torch.float64) + 1e-9)
        sync.running_mean.copy_(torch.rand(4, dtype=torch.float64) / 3)
    naive = convert_sync_batchnorm_to_naive(torch.nn.Sequential(sync))[0]
    assert naive.weight.dtype == torch.float64 and naive.running_mean.dtype == torch.float64
    assert torch.equal(naive.weight, sync.weight) and torch.equal(naive.running_mean, sync.running_mean)
