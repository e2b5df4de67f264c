"""Device, process group and the DeepSpeed engine.

DeepSpeed is imported here and only when an engine is built, after ``DS_ACCELERATOR`` is set
on a machine without CUDA; a missing DeepSpeed is an error with the install command, never a
silent fall-back to another code path.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as tdist
import torch.nn as nn

from eigenmap.config import Config

__all__ = ["pick_device", "precision_of", "init_process_group", "deepspeed_config",
           "import_deepspeed", "build_engine", "full_parameters"]

log = logging.getLogger(__name__)


def pick_device(cfg: Config) -> torch.device:
    """CUDA (this process's local GPU) when the config asks for GPUs and one is visible, else CPU."""
    if cfg.dist.gpus_per_worker > 0:
        if not torch.cuda.is_available():
            raise RuntimeError(f"dist.gpus_per_worker={cfg.dist.gpus_per_worker} but no CUDA device is "
                               "visible in this worker; set dist.gpus_per_worker=0 to train on CPU")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        # under Ray each worker sees only its own GPU(s) (CUDA_VISIBLE_DEVICES), index 0
        index = local_rank if local_rank < torch.cuda.device_count() else 0
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def precision_of(cfg: Config, device: torch.device) -> str:
    """'fp32', 'bf16' or 'fp16': ``auto`` is bf16 on CUDA and fp32 on CPU."""
    p = cfg.dist.precision
    if p == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return p


def init_process_group(device: torch.device) -> None:
    """Join or create the default process group.

    Under Ray Train (TorchConfig) the group already exists. Under torchrun the env:// variables
    are set. As one plain process a world of size 1 is created from an in-memory store, so the
    DeepSpeed engine runs the same code path everywhere (no port is opened).
    """
    if tdist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(minutes=30)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        tdist.init_process_group(backend, timeout=timeout)
    else:
        os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed's sanity check reads it
        tdist.init_process_group(backend, store=tdist.HashStore(), rank=0, world_size=1, timeout=timeout)


def deepspeed_config(cfg: Config, precision: str, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON config: ZeRO stage, precision, clipping; the optimiser is the client's.

    Mixed precision uses DeepSpeed's ``torch_autocast`` (fp32 master weights, bf16/fp16 matmuls
    and convolutions, fp32 BatchNorm and L2-BatchNorm statistics) rather than DeepSpeed's bf16
    mode, which would cast the whole model, BatchNorm included, to bf16.
    """
    b = cfg.data.batch_size_per_worker
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": b,
        "gradient_accumulation_steps": 1,
        "train_batch_size": b * world_size,
        "zero_optimization": {"stage": cfg.dist.zero_stage},
        # SGD/LARS/AdamW passed as client optimisers are not on DeepSpeed's tested list for ZeRO
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": float(cfg.optim.grad_clip or 0.0),
        "steps_per_print": 2**31 - 1,  # our own logger reports; DeepSpeed's would sync every step
        "wall_clock_breakdown": False,
    }
    ds["zero_optimization"].update(_zero_buckets(cfg.dist.zero_stage))
    if precision in ("bf16", "fp16"):
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16" if precision == "bf16" else "float16"}
    return ds


# elements: 200 MB of fp32 (DeepSpeed's defaults, 1e9, exceed a ViT-B's 159M parameters)
ZERO3_LIVE_ELEMENTS = 50_000_000


def _zero_buckets(stage: int) -> dict[str, Any]:
    """ZeRO 3 keeps gathered parameters alive while they are "live" or will be "reused" within
    DeepSpeed's default 1e9 elements: for a model below that, the whole model for the step. At
    5e7 a ViT-B/16 worker held 425 MiB less after a step and peaked 559 MiB lower
    (tools/bench_memory.py, docs/backbones.md); stages 0-2 keep DeepSpeed's defaults (smaller
    buckets changed nothing measurable at ZeRO 2)."""
    if stage < 3:
        return {}
    return {key: ZERO3_LIVE_ELEMENTS for key in ("reduce_bucket_size", "allgather_bucket_size",
                                                  "stage3_max_live_parameters", "stage3_max_reuse_distance",
                                                  "stage3_prefetch_bucket_size")}


def import_deepspeed(device_type: str = "cpu"):
    """Import DeepSpeed (setting ``DS_ACCELERATOR=cpu`` first on a machine without CUDA)."""
    if device_type != "cuda":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # torch's extension builder warns "No CUDA runtime is found" when DeepSpeed imports it on
        # a machine without CUDA: true and expected here, and printed by every rank
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import deepspeed
    except ImportError as e:
        raise RuntimeError(
            "DeepSpeed is required by the training worker but cannot be imported "
            f"({e}); install it with `pip install 'deepspeed>=0.15,<0.20'`") from e
    return deepspeed


def build_engine(cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 precision: str):
    """Wrap ``model`` and the client ``optimizer`` in a DeepSpeed engine on ``device``.

    The process group must exist (:func:`init_process_group`). channels_last is applied to
    ``engine.module`` AFTER initialise: DeepSpeed's parameter broadcast fails on
    channels_last conv weights.
    """
    deepspeed = import_deepspeed(device.type)
    world = tdist.get_world_size() if tdist.is_initialized() else 1
    engine, ds_optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(cfg, precision, world),
        dist_init_required=False)
    if world == 1 and cfg.dist.zero_stage == 0:
        # nothing to reduce, yet DeepSpeed would still flatten, all-reduce and copy back every
        # gradient after each backward: a measurable share of a CPU step (tools/bench_step.py,
        # DeepSpeed / bare; figures in docs/results/)
        engine.enable_backward_allreduce = False
    if getattr(model, "channels_last", cfg.model.channels_last) and cfg.dist.zero_stage == 0:
        engine.module.to(memory_format=torch.channels_last)  # NHWC weights: no per-step layout conversion
    # ZeRO 1-2 view each gradient as a slice of a flat buffer and fail on channels_last grads:
    # there the weights stay NCHW and the channels_last INPUT still selects NHWC convolutions.
    return engine, ds_optimizer


def full_parameters(engine) -> contextlib.AbstractContextManager:
    """Call on EVERY rank: inside, ``engine.module``'s parameters are whole, also under ZeRO 3
    (which keeps only this rank's shard of each between steps); elsewhere a no-op."""
    stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else 0
    if stage < 3:
        return contextlib.nullcontext()
    deepspeed = import_deepspeed(next(engine.module.buffers()).device.type)
    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)
