"""The training worker: one process of a run, whoever launched it.

It runs inside a Ray Train worker (``launch/ray_runner.py`` passes a checkpoint store backed by
Ray's checkpoint API), under torchrun, or as one plain process::

    python -m eigenmap.train.worker configs/demo.yaml data.train_path=synthetic --json out.json

Nothing here imports Ray, FFCV or FAISS at import time; DeepSpeed is imported when the engine
is built and is required (a clear error if missing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from eigenmap import dist
from eigenmap.config import Config, ConfigError, load_config, resolve, save_config
from eigenmap.train.checkpoint import (CheckpointStore, LocalCheckpointStore, TrainerState, export_weights,
                                       read_checkpoint, write_checkpoint)
from eigenmap.train.checks import SYNTHETIC, check_train_config
from eigenmap.train.engine import build_engine, init_process_group, pick_device, precision_of
from eigenmap.train.logging import RunLogger
from eigenmap.train.optim import build_optimizer, set_lr
from eigenmap.train.schedule import lr_factor

__all__ = ["train", "build_loader", "build_augment", "main"]

log = logging.getLogger(__name__)


def build_loader(cfg: Config, *, rank: int, world_size: int, device: torch.device):
    """The two-view training loader of this rank (FFCV, or the synthetic source)."""
    if cfg.data.train_path == SYNTHETIC:
        from eigenmap.train.synthetic import SyntheticTwoViewLoader

        return SyntheticTwoViewLoader(cfg.data, num_classes=cfg.model.num_classes, rank=rank,
                                      world_size=world_size, seed=cfg.train.seed, device=device)
    from eigenmap.data import build_train_loader

    return build_train_loader(cfg.data, cfg.data.train_path, rank=rank, world_size=world_size,
                              seed=cfg.train.seed, device=device)


def build_augment(cfg: Config, *, rank: int, device: torch.device):
    """Batched colour/blur/solarize augmentations on the device, seeded per rank."""
    from eigenmap.data import BatchAugment

    return BatchAugment(cfg.data, seed=cfg.train.seed * 65_536 + rank, device=device)


def _setup_model(cfg: Config, device: torch.device, world: int, logger: logging.Logger) -> torch.nn.Module:
    from eigenmap.models import build_model

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg)
    if cfg.model.sync_batchnorm and world > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN statistics over the global batch
        else:  # torch's SyncBatchNorm raises on CPU tensors (GPU/XPU only in torch 2.14)
            logger.warning("model.sync_batchnorm: SyncBatchNorm does not run on CPU in torch %s; BatchNorm "
                           "statistics stay per worker on this CPU run (they are synchronised on GPUs)",
                           torch.__version__)
    return model.to(device)


def _record_worker(run_dir: Path, rank: int, device: torch.device, resumed_from: Optional[int]) -> None:
    """Who this rank is (pid, host), so operators (and the fault test) can find each process."""
    workers = run_dir / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    (workers / f"rank{rank}.json").write_text(json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "device": str(device), "time": time.time()}))
    if rank == 0:
        with open(run_dir / "attempts.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), "pid": os.getpid(), "resumed_from_step": resumed_from,
                                "world_size": dist.get_world_size()}) + "\n")


def train(cfg: Config, store: Optional[CheckpointStore] = None) -> dict[str, Any]:
    """Train (or resume) the run described by the resolved ``cfg``; call on every rank.

    Args:
        cfg: a config passed through :func:`eigenmap.config.resolve`.
        store: where checkpoints go and the latest is found; default: ``run_dir/checkpoints``.

    Returns:
        Summary (the same keys as ``run_dir/status.json``): ``status`` ("finished" or
        "nonfinite"), ``step``, ``epoch``, ``total_steps``, ``message``.
    """
    device = pick_device(cfg)
    init_process_group(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != cfg.dist.num_workers:
        raise ConfigError(f"config key 'dist.num_workers' is {cfg.dist.num_workers} but this job has {world} "
                          f"processes; set dist.num_workers={world}")
    if device.type == "cpu":
        torch.set_num_threads(cfg.dist.cpus_per_worker)  # the cores this worker was given, no oversubscription
    else:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest conv kernels
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast on tensor cores
    run_dir = Path(cfg.train.run_dir)
    if rank == 0:
        save_config(cfg, run_dir / "config.yaml")
    store = store or LocalCheckpointStore(run_dir / "checkpoints", cfg.train.keep_checkpoints)
    loader = build_loader(cfg, rank=rank, world_size=world, device=device)
    steps_per_epoch = len(loader)
    planned_steps = cfg.train.epochs * steps_per_epoch  # the schedule always spans the planned run
    total_steps = min(planned_steps, cfg.train.max_steps or planned_steps)
    warmup_steps = min(round(cfg.optim.warmup_epochs * steps_per_epoch), planned_steps)
    model = _setup_model(cfg, device, world, log)
    engine, optimizer = build_engine(cfg, model, build_optimizer(model, cfg), device, precision_of(cfg, device))
    if cfg.dist.compile:
        engine.compile()  # torch.compile of the module's forward, state-dict keys unchanged
    augment = build_augment(cfg, rank=rank, device=device)
    state = TrainerState()
    with store.latest() as ckpt:
        if ckpt is not None:
            state = read_checkpoint(ckpt, engine, augment)
    _record_worker(run_dir, rank, device, state.step if ckpt is not None else None)
    if ckpt is not None and rank == 0:
        log.info("resumed from %s at step %d (epoch %d, step %d in epoch)", ckpt, state.step, state.epoch,
                 state.step_in_epoch)
    summary = _loop(cfg, engine, optimizer, loader, augment, store, state, device,
                    total_steps=total_steps, planned_steps=planned_steps, warmup_steps=warmup_steps)
    if rank == 0:
        if summary["status"] == "finished":
            summary["weights"] = {k: str(v) for k, v in export_weights(engine.module, run_dir).items()}
        (run_dir / "status.json").write_text(json.dumps(summary, indent=1))
    dist.barrier()
    return summary


def _loop(cfg: Config, engine, optimizer, loader, augment, store: CheckpointStore, state: TrainerState,
          device: torch.device, *, total_steps: int, planned_steps: int, warmup_steps: int) -> dict[str, Any]:
    rank, world = dist.get_rank(), dist.get_world_size()
    t = cfg.train
    steps_per_epoch, batch = len(loader), cfg.data.batch_size_per_worker
    logger = RunLogger(Path(t.run_dir), rank=rank, total_steps=total_steps, start_step=state.step,
                       progress_bar=t.progress_bar, tensorboard=t.tensorboard)
    l2bn = getattr(engine.module, "l2bn", None)
    metrics: dict[str, float] = {}
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    window_start, window_steps = time.perf_counter(), 0
    engine.train()
    while state.step < total_steps:
        loader.set_epoch(state.epoch, start_step=state.step_in_epoch)
        for view1, view2, labels in loader:
            set_lr(optimizer, lr_factor(state.step, total_steps=planned_steps, warmup_steps=warmup_steps,
                                        final_ratio=cfg.optim.final_lr_ratio))
            view1 = view1.to(device, non_blocking=True)  # async H2D copy, overlaps the previous step
            view2 = view2.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            x1, x2 = augment(view1, view2)  # colour/blur/solarize batched on the training device
            x = torch.cat([x1, x2]).contiguous(memory_format=torch.channels_last)  # one pass, NHWC convs
            out = engine(x, labels)
            engine.backward(out["total"])
            engine.step()
            nonfinite |= ~torch.isfinite(out["total"].detach())  # device-side flag: no host sync per step
            state.step += 1
            state.step_in_epoch += 1
            window_steps += 1
            logger.step()
            epoch_end, last = state.step_in_epoch == steps_per_epoch, state.step == total_steps
            log_now = state.step % t.log_every_steps == 0 or epoch_end or last
            ckpt_now = state.step % t.checkpoint_every_steps == 0 or epoch_end or last
            if (log_now or ckpt_now) and dist.all_reduce_sum(nonfinite.float()).item() > 0:  # host sync
                return _stop_nonfinite(logger, state, out, total_steps)  # same decision on every rank
            window_seconds = time.perf_counter() - window_start
            if log_now:
                keys = ["loss", "reg", "total", "cls_loss", "acc"]
                values = torch.stack([out[k].detach().float() for k in keys]).tolist()
                rate = window_steps * batch / window_seconds
                metrics = {**dict(zip(keys, values)), "lr": optimizer.param_groups[0]["lr"]}
                logger.scalars(state.step, state.epoch, metrics, images_per_sec_per_worker=rate, world_size=world)
            if epoch_end:
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
                logger.spectrum(state.step, l2bn.eigenvalues if l2bn is not None else None)
            # BN and L2-BN rescale: the loss can stay finite while weights or statistics overflow
            if ckpt_now and dist.all_reduce_sum(_nonfinite_state(engine.module).float()).item() > 0:
                return _stop_nonfinite(logger, state, out, total_steps)
            if ckpt_now:
                store.save(state.step, lambda d: write_checkpoint(d, engine, state, augment, metrics),
                           {**metrics, "step": state.step, "epoch": state.epoch})
            if log_now or ckpt_now:
                window_start, window_steps = time.perf_counter(), 0  # rates exclude logging and checkpoints
            if epoch_end or last:
                break
    logger.close()
    return {"status": "finished", "step": state.step, "epoch": state.epoch, "total_steps": total_steps,
            "metrics": metrics, "message": f"finished {state.step} steps"}


def _nonfinite_state(module: torch.nn.Module) -> torch.Tensor:
    """Device bool: some floating parameter or buffer holds a NaN or an inf."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return ~torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def _stop_nonfinite(logger: RunLogger, state: TrainerState, out: dict, total_steps: int) -> dict[str, Any]:
    values = {k: float(v.detach().float()) for k, v in out.items()}
    message = (f"non-finite loss or model state by step {state.step} (last values {values}); stopped without saving, "
               f"the last good checkpoint stays the latest. Lower optim.base_lr or set optim.grad_clip.")
    logger.close()
    log.error(message)
    return {"status": "nonfinite", "step": state.step, "epoch": state.epoch, "total_steps": total_steps,
            "metrics": values, "message": message}


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m eigenmap.train.worker CONFIG [key=value ...] [--json PATH]`` (plain or torchrun)."""
    parser = argparse.ArgumentParser(prog="python -m eigenmap.train.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config, e.g. configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--json", default=None, help="write the run summary here (rank 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = resolve(load_config(args.config, args.overrides))
        check_train_config(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = train(cfg)
        if args.json and dist.get_rank() == 0:
            Path(args.json).write_text(json.dumps(summary, indent=1))
    except ConfigError as e:  # found once the job's processes are known (dist.num_workers)
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        # this process made the group (Ray Train tears down its own): NCCL otherwise warns at exit
        # and its communicators outlive the run
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0 if summary["status"] == "finished" else 3


if __name__ == "__main__":
    sys.exit(main())
