"""tools/bench_step.py: its FLOP count, and one tiny end-to-end run (no speed is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tools" / "bench_step.py"


def _load_bench():
    return load_script("tools/bench_step.py")


def test_step_flops_count_the_backward_as_twice_the_forward():
    """The GPU figure divides these FLOPs by the measured matmul rate: a forward-only count
    would report a third of the true efficiency."""
    from torch.utils.flop_counter import FlopCounterMode

    from eigenmap.config import from_dict, resolve
    from eigenmap.data import BatchAugment
    from eigenmap.data.synthetic import SyntheticTwoViewLoader
    from eigenmap.models import build_model
    from eigenmap.train.optim import build_optimizer

    bench = _load_bench()
    cfg = resolve(from_dict({"model": {"arch": "resnet18", "projector_hidden_dim": 64, "projector_out_dim": 64,
                                       "num_classes": 10},
                             "data": {"train_path": "synthetic", "resolution": 32, "eval_resize": 32,
                                      "batch_size_per_worker": 4, "synthetic_images": 16},
                             "dist": {"num_workers": 1}}))
    torch.manual_seed(0)
    model = build_model(cfg)
    augment = BatchAugment(cfg.data, seed=0, device=torch.device("cpu"))
    loader = SyntheticTwoViewLoader(cfg.data, num_classes=10, rank=0, world_size=1, seed=0,
                                    device=torch.device("cpu"))
    PlainEngine = load_script("tools/plain_engine.py").PlainEngine
    step = bench.count_step_flops(PlainEngine(model, build_optimizer(model, cfg), "fp32"), augment, loader)
    v1, v2, labels = next(iter(loader))
    x = torch.cat(augment(v1, v2)).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, labels)
    forward = counter.get_total_flops()
    # backward = 2 x forward (input and weight gradients), less the input gradients nobody needs:
    # the first conv's (6.5% of this forward) and the online classifier's (detached features)
    assert 2.7 * forward < step <= 3.0 * forward, (step, forward)
    assert all(p.grad is None for p in model.parameters())  # the count leaves no gradients behind


@pytest.mark.slow
@pytest.mark.multiprocess
def test_bench_step_runs_bare_deepspeed_and_both_ray_layouts_and_writes_their_ratios(tmp_path):
    figures = tmp_path / "bench.json"
    cmd = [sys.executable, str(BENCH), "--arch", "resnet18", "--resolution", "32", "--batch", "8",
           "--projector-dim", "64", "--warmup", "3", "--steps", "3", "--window", "3", "--rounds", "1",
           "--threads", "2", "--json", str(figures)]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(figures.read_text())
    assert set(data["runs"]) == {"bare", "deepspeed", "ray_1x2", "ray_2x1"}
    assert len(data["runs"]["bare"]) == 2  # before and after the round
    for kind, runs in data["runs"].items():
        assert all(r["images_per_sec"] > 0 for r in runs), (kind, runs)
    ray_run = data["runs"]["ray_1x2"][0]
    assert ray_run["status"] == "finished" and ray_run["workers"] == 1 and ray_run["threads_per_worker"] == 2
    bare = sum(r["images_per_sec"] for r in data["runs"]["bare"]) / 2
    expected = {"deepspeed_over_bare": data["runs"]["deepspeed"][0]["images_per_sec"] / bare,
                "ray_deepspeed_over_bare": ray_run["images_per_sec"] / bare,
                "ray_2x1_over_1x2": data["runs"]["ray_2x1"][0]["images_per_sec"] / ray_run["images_per_sec"]}
    assert data["ratios"] == pytest.approx(expected)
    assert "ray_deepspeed_over_bare" in done.stdout


def test_the_cuda_defaults_parse_on_a_machine_without_a_gpu():
    """The CUDA defaults (20 warm-up and 60 timed steps) must fit the timing window: with a
    window of 3 they failed the script's own multiple-of-window check, so the GPU check exited."""
    bench = _load_bench()
    args = bench.parse_arguments(["--device", "cuda", "--arch", "resnet50", "--resolution", "224", "--synthetic"])
    assert (args.batch, args.projector_dim, args.rounds) == (256, 8192, 1)
    assert args.warmup % args.window == 0 and args.steps % args.window == 0
    cpu = bench.parse_arguments([])
    assert cpu.warmup % cpu.window == 0 and cpu.steps % cpu.window == 0
    with pytest.raises(SystemExit):
        bench.parse_arguments(["--steps", "10", "--window", "3"])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_bench_step_on_real_data_reports_the_worker_loop_over_the_model_step(small_beton, tmp_path):
    figures = tmp_path / "bench.json"
    cmd = [sys.executable, str(BENCH), "--data", str(small_beton), "--arch", "resnet18", "--resolution", "32",
           "--batch", "16", "--projector-dim", "64", "--warmup", "3", "--steps", "6", "--window", "3",
           "--rounds", "1", "--threads", "2", "--no-ray", "--json", str(figures)]
    done = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "DS_ACCELERATOR": "cpu"}, capture_output=True,
                          text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(figures.read_text())
    assert data["reference"] == "model_step" and set(data["runs"]) == {"model_step", "deepspeed"}
    model_step = sum(r["images_per_sec"] for r in data["runs"]["model_step"]) / 2
    worker = data["runs"]["deepspeed"][0]
    assert worker["status"] == "finished" and worker["images_per_sec"] > 0
    assert data["ratios"]["deepspeed_over_model_step"] == pytest.approx(worker["images_per_sec"] / model_step)
    assert "deepspeed_over_model_step" in done.stdout


def test_the_backbone_alone_bound_runs_and_reports_pairs_per_second():
    """The GPU target compares the worker loop with this rate measured in the same run."""
    bench = _load_bench()
    args = bench.parse_arguments(["--arch", "resnet18", "--resolution", "32", "--batch", "4", "--warmup", "3",
                                  "--steps", "6", "--window", "3"])
    figures = bench.backbone_alone(args)
    assert len(figures["window_rates"]) == 2 and figures["images_per_sec"] > 0
