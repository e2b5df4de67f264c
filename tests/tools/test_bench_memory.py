"""tools/bench_memory.py: the sharding it expects, and the config it measures (no process is started)."""

from __future__ import annotations

import pytest
from script_loader import load_script


def test_expected_savings_are_the_sharded_shares_of_adam_gradients_and_weights():
    bench = load_script("tools/bench_memory.py")
    mib = 2**20
    saved = bench.expected_savings(params=mib, world=4)  # 1 Mi parameters: 8 MiB Adam, 4 MiB grads, 4 MiB weights
    assert saved == pytest.approx({"1": 0.75 * 8, "2": 0.75 * 12, "3": 0.75 * 16})


def test_the_benchmark_measures_the_recipe_at_the_asked_stage_in_fp32_on_cpu():
    bench = load_script("tools/bench_memory.py")
    args = bench.argparse.Namespace(
        config=str(bench.ROOT / "configs" / "imagenet_vit_base_100ep.yaml"), arch="timm:vit_tiny_patch16_224",
        resolution=32, batch=2, workers=2, device="cpu",
        set=["model.timm_kwargs.img_size=32", "model.timm_kwargs.patch_size=4"])
    cfg = bench.bench_config(args, 3)
    assert (cfg.dist.zero_stage, cfg.dist.num_workers, cfg.dist.precision, cfg.dist.gpus_per_worker) == (3, 2, "fp32", 0)
    assert cfg.model.projector_out_dim == 8192 and cfg.optim.name == "adamw"  # the recipe's head and optimiser
    assert cfg.model.timm_kwargs == {"drop_path_rate": 0.1, "img_size": 32, "patch_size": 4}
