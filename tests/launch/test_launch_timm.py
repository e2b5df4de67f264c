"""timm backbones end to end: `eigenmap train` (embedded Ray, 2 DeepSpeed workers on gloo),
resume, `eigenmap export --format timm` loaded back by timm, `eigenmap extract`, `eigenmap probe
--knn-only`. Every command is the CLI as a user types it, on 160 Imagenette images (FFCV).

A tiny ViT (vit_tiny_patch16_224 at 32 px, patch 4; AdamW under ZeRO 1 with the weight-decay
cosine and gradient clipping) and the smallest ConvNeXt (convnext_atto; ZeRO 0, channels_last).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from launch_helpers import REPO, cli_env, eigenmap_train, run_metrics

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

# 2 workers x 8 images, 4 steps, a checkpoint every 2. The CPU-side crop is the whole image, no
# flip: FFCV draws crops from numba's unseeded generators (see tests/train/test_train_worker.py)
TIMM_RUN = """\
model: {projector_hidden_dim: 64, projector_out_dim: 64, num_classes: 10}
loss: {alpha: 0.01}
optim: {name: adamw, base_lr: 0.0005, weight_decay: 0.04, weight_decay_final: 0.4, grad_clip: 3.0, warmup_epochs: 0.2}
data: {resolution: 32, eval_resize: 32, batch_size_per_worker: 8, loader_workers: 1, scale_min: 1.0, scale_max: 1.0,
       ratio_min: 1.0, ratio_max: 1.0, view1: {flip_prob: 0.0}, view2: {flip_prob: 0.0}}
dist: {num_workers: 2, cpus_per_worker: 1, max_failures: 0}
train: {epochs: 1, max_steps: 4, log_every_steps: 1, checkpoint_every_steps: 2, keep_checkpoints: 2, progress_bar: false}
eval: {knn_ks: [5]}
"""

BACKBONES = {
    "vit": ["model.arch=timm:vit_tiny_patch16_224", "model.timm_kwargs.img_size=32", "model.timm_kwargs.patch_size=4",
            "dist.zero_stage=1"],
    "convnext": ["model.arch=timm:convnext_atto", "dist.zero_stage=0"],
}


def eigenmap(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def timm_runs(request, small_beton, tmp_path_factory) -> dict:
    """One uninterrupted 4-step run, and a copy of it cut back to its step-2 checkpoint (the later
    checkpoint, Ray's snapshot that lists it, the weights and status removed: the run resumes from
    the newest good ``step_*`` folder) and resumed by the same command."""
    tmp = tmp_path_factory.mktemp(f"timm-{request.param}")
    config, full = tmp / "run.yaml", tmp / "full"
    config.write_text(TIMM_RUN)
    command = [str(config), f"data.train_path={small_beton}", *BACKBONES[request.param]]
    done = eigenmap_train(*command, f"train.run_dir={full}", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resumed = tmp / "resumed"
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_00000004")
    (resumed / "checkpoints" / "checkpoint_manager_snapshot.json").unlink()
    for name in ("model.pt", "encoder.pt", "status.json"):
        (resumed / name).unlink()
    again = eigenmap_train(*command, f"train.run_dir={resumed}", timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    return {"name": request.param, "full": full, "resumed": resumed, "tmp": tmp}


def test_a_resumed_run_reaches_the_losses_of_an_uninterrupted_one(timm_runs):
    """Tolerance 1e-5 on losses of order 10: the same deterministic fp32 CPU kernels on the same
    data, weights, optimiser state and RNG state; a state not restored moves them by far more."""
    attempts = [json.loads(line) for line in (timm_runs["resumed"] / "attempts.jsonl").read_text().splitlines()]
    assert [a["resumed_from_step"] for a in attempts] == [None, 2]
    full, resumed = run_metrics(timm_runs["full"]), run_metrics(timm_runs["resumed"])
    assert [r["step"] for r in full] == [1, 2, 3, 4] and [r["step"] for r in resumed][-2:] == [3, 4]
    for a, b in zip(full[2:], resumed[-2:]):
        for key in ("loss", "reg", "total", "lr"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(a[key])), (key, a, b)
    assert full[0]["loss"] != full[3]["loss"]  # it trained


def test_the_timm_export_loads_back_in_timm_with_the_runs_features(timm_runs):
    import timm

    from eigenmap.run import load_run

    out = timm_runs["tmp"] / "exported"
    done = eigenmap("export", str(timm_runs["full"]), "--format", "timm", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json"}
    config = json.loads((out / "config.json").read_text())
    loaded = load_run(timm_runs["full"])
    name = loaded.config.model.arch.removeprefix("timm:")
    assert config["architecture"] == name and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["pretrained_cfg"]["mean"] == list(loaded.config.data.mean)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = loaded.model.encode(x)
    by_file = timm.create_model(name, pretrained=True, num_classes=0, **loaded.config.model.timm_kwargs,
                                pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"))).eval()
    by_folder = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=0).eval()
    with torch.no_grad():
        for net in (by_file, by_folder):
            assert (net(x) - ours).abs().max() <= 1e-4


def test_extract_and_the_knn_probe_run_on_the_trained_encoder(timm_runs, small_beton, small_val_beton):
    run, tmp = timm_runs["full"], timm_runs["tmp"]
    extracted = eigenmap("extract", str(run), str(small_val_beton))
    assert extracted.returncode == 0, extracted.stderr[-3000:]
    meta = json.loads((run / "eval" / "features" / "val" / "features.json").read_text())
    width = {"vit": 192, "convnext": 320}[timm_runs["name"]]
    assert meta["shapes"] == {"features": [80, width], "codes": [80, 64], "labels": [80], "thumbnails": [80, 256]}
    probed = eigenmap("probe", str(run), "--train", str(small_beton), "--val", str(small_val_beton), "--knn-only",
                      "--json", str(tmp / "knn.json"))
    assert probed.returncode == 0, probed.stderr[-3000:]
    figures = json.loads((tmp / "knn.json").read_text())
    assert figures.get("linear_probe") is None
    assert set(figures["knn"]["top1"]) == {"features", "codes"}
    assert 0.0 <= figures["knn"]["top1"]["features"]["5"] <= 100.0
