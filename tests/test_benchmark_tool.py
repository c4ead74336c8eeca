"""tools/benchmark.py end to end on a small config: the JSON fields, and --huge-pages restarting
the script with PyTorch's THP_MEM_ALLOC_ENABLE set."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__ + "/.."))


def test_benchmark_huge_pages_and_fused_path(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--config-file",
         os.path.join(ROOT, "configs", "Samples", "cgrseg_t_street.yaml"), "--input-size", "96", "128",
         "--iters", "2", "--warmup", "1", "--optimize", "--channels-last", "--no-flops", "--huge-pages",
         "--output", str(out)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["huge_page_allocations"] is True
    assert report["optimized"]["latency_s"]["runs"] == 2
    assert report["optimized"]["max_abs_diff_vs_plain"] <= 1e-4
