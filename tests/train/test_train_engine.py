"""The DeepSpeed engine of a one-process run takes exactly the plain optimiser's steps.

A world of one skips DeepSpeed's gradient all-reduce (nothing to reduce; it cost ~4% of a CPU
step); this checks that the engine's steps still equal a bare ``loss.backward(); opt.step()``.
It runs in a subprocess so that its process group and thread setting stay out of this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.multiprocess]

SCRIPT = r"""
import json, torch
from eigenmap.config import from_dict, resolve
from eigenmap.models import build_model
from eigenmap.train.engine import build_engine, init_process_group
from eigenmap.train.optim import build_optimizer

torch.set_num_threads(1)
cfg = resolve(from_dict({
    "model": {"arch": "resnet18", "projector_hidden_dim": 32, "projector_out_dim": 32, "num_classes": 10},
    "optim": {"name": "lars", "warmup_epochs": 0.0, "grad_clip": 1.0},
    "data": {"train_path": "synthetic", "resolution": 32, "eval_resize": 32, "batch_size_per_worker": 8},
    "dist": {"num_workers": 1, "cpus_per_worker": 1, "zero_stage": 0},
}))
init_process_group(torch.device("cpu"))

def model():
    torch.manual_seed(0)
    return build_model(cfg)

initial = model().state_dict()
bare = model().to(memory_format=torch.channels_last)
bare_opt = build_optimizer(bare, cfg)
wrapped = model()  # build_engine makes it channels_last after DeepSpeed's parameter broadcast
engine, _ = build_engine(cfg, wrapped, build_optimizer(wrapped, cfg), torch.device("cpu"), "fp32")
gen = torch.Generator().manual_seed(1)
for _ in range(2):
    x = torch.randn(16, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (8,), generator=gen)
    out = bare(x, labels)
    out["total"].backward()
    torch.nn.utils.clip_grad_norm_(bare.parameters(), 1.0)
    bare_opt.step()
    bare_opt.zero_grad(set_to_none=True)
    out = engine(x, labels)
    engine.backward(out["total"])
    engine.step()
a, b = bare.state_dict(), engine.module.state_dict()
print(json.dumps({"keys_equal": a.keys() == b.keys(),
                  "max_abs_diff": max(float((a[k].float() - b[k].float()).abs().max()) for k in a),
                  "moved": max(float((a[k] - initial[k]).abs().max()) for k in a if a[k].is_floating_point())}))
"""


def test_one_process_deepspeed_engine_steps_equal_plain_optimizer_steps():
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["keys_equal"]
    assert result["moved"] > 1e-3, f"the steps should have changed the weights: {result}"
    # same fp32 kernels in the same order on one thread: equal to the bit here (0.0 measured);
    # the margin is for a DeepSpeed whose gradient-norm sum runs in another order
    assert result["max_abs_diff"] < 1e-6, result
