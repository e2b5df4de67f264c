"""The training worker: one process of a run, whoever launched it.

It runs inside a Ray Train worker (``launch/ray_runner.py`` passes a checkpoint store backed by
Ray's checkpoint API), under torchrun, or as one plain process::

    python -m eigenmap.train.worker configs/demo.yaml data.train_path=synthetic --json out.json

Exit codes (:mod:`eigenmap.train.exit_codes`, docs/exit-codes.md), the same as ``eigenmap train``'s:
0 finished, 1 failed, 2 refused (a bad config or argument, a changed setting the run's
checkpoint cannot follow, see :mod:`eigenmap.train.resume`; the run directory in use by another
run), 3 stopped on a non-finite loss, 75 preempted (SIGTERM), 130 interrupted (Ctrl-C): after
75 and 130 a checkpoint was saved (a second Ctrl-C aborts at once, keeping the last one); run the
same command again to resume.

Nothing here imports Ray, FFCV or FAISS at import time; DeepSpeed is imported when the engine
is built and is required (a clear error if missing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from eigenmap import dist
from eigenmap.config import Config, ConfigError, save_config, to_dict
from eigenmap.data import SYNTHETIC, BatchAugment, SyntheticTwoViewLoader, build_train_loader
from eigenmap.data.manifest import dataset_identity
from eigenmap.data.prefetch import AugmentAhead
from eigenmap.durable import atomic_write_text
from eigenmap.host_memory import keep_freed_memory
from eigenmap.models import EigenmapModel, build_model
from eigenmap.run import RunDir, export_weights
from eigenmap.train.checkpoint import (CheckpointStore, LocalCheckpointStore, TrainerState, read_checkpoint, read_meta,
                                       write_checkpoint)
from eigenmap.train.checks import load_train_config
from eigenmap.train.engine import build_engine, full_parameters, init_process_group, pick_device, precision_of
from eigenmap.train.exit_codes import exit_code
from eigenmap.train.optim import build_optimizer, set_lr, set_weight_decay
from eigenmap.train.preempt import INTERRUPTED, PREEMPTED, StopRequest, stop_on_signals
from eigenmap.train.resume import ALLOW_FLAG, ALLOW_HELP, reposition
from eigenmap.train.run_logger import RunLogger
from eigenmap.train.run_start import (ABORTED, REFUSALS, command_line, finished_run, report_end, start_sentence,
                                      starting_run)
from eigenmap.train.schedule import StepPlan, plural
from eigenmap.threads import set_torch_threads
from eigenmap.train.step import train_step

__all__ = ["train", "build_loader", "build_augment", "main"]

log = logging.getLogger(__name__)


def build_loader(cfg: Config, *, rank: int, world_size: int, device: torch.device):
    """The two-view training loader of this rank (FFCV, or the synthetic source)."""
    if cfg.data.train_path == SYNTHETIC:
        return SyntheticTwoViewLoader(cfg.data, num_classes=cfg.model.num_classes, rank=rank,
                                      world_size=world_size, seed=cfg.train.seed, device=device)
    return build_train_loader(cfg.data, cfg.data.train_path, rank=rank, world_size=world_size,
                              seed=cfg.train.seed, device=device)


def build_augment(cfg: Config, *, rank: int, device: torch.device, channels_last: Optional[bool] = None
                  ) -> BatchAugment:
    """Batched colour/blur/solarize augmentations on the device, seeded per rank, in the
    memory format the model wants (``channels_last``: the model's, default
    ``model.channels_last``); compiled with the model (``dist.compile``, GPUs only)."""
    nhwc = cfg.model.channels_last if channels_last is None else channels_last
    return BatchAugment(cfg.data, seed=cfg.train.seed * 65_536 + rank, device=device,
                        channels_last=nhwc, compile=cfg.dist.compile)


@dataclass
class WorkerParts:
    """What the loop drives, built once per worker by :func:`train`."""

    engine: Any  # DeepSpeed engine around an EigenmapModel
    optimizer: torch.optim.Optimizer
    loader: Any  # TwoViewLoader or SyntheticTwoViewLoader
    augment: BatchAugment
    store: CheckpointStore
    logger: RunLogger
    stop: StopRequest
    run_info: dict  # recorded in each checkpoint's meta.json: the resume rules compare with it

    @property
    def model(self) -> EigenmapModel:
        return self.engine.module


def _setup_model(cfg: Config, device: torch.device, world: int) -> torch.nn.Module:
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg)
    if cfg.model.sync_batchnorm and world > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN statistics over the global batch
        elif dist.is_main_process():  # torch's SyncBatchNorm raises on CPU tensors (GPU/XPU only in torch 2.14)
            log.warning("model.sync_batchnorm: SyncBatchNorm does not run on CPU in torch %s; BatchNorm "
                        "statistics stay per worker on this CPU run (they are synchronised on GPUs)",
                        torch.__version__)
    return model.to(device)


def _use_device(cfg: Config, device: torch.device) -> None:
    if device.type == "cpu":
        set_torch_threads(cfg.dist.cpus_per_worker)  # the cores this worker was given, no oversubscription
        keep_freed_memory()  # activations above glibc's mmap ceiling otherwise fault in anew every step
    else:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest conv kernels
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast on tensor cores


def _record_worker(run: RunDir, rank: int, device: torch.device, resumed_from: Optional[int]) -> None:
    """Who this rank is (pid, host), so operators (and the fault test) can find each process."""
    run.workers.mkdir(parents=True, exist_ok=True)
    run.worker_file(rank).write_text(json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "device": str(device), "time": time.time()}))
    if rank == 0:
        with open(run.attempts, "a") as f:
            f.write(json.dumps({"time": time.time(), "pid": os.getpid(), "resumed_from_step": resumed_from,
                                "world_size": dist.get_world_size()}) + "\n")


def train(cfg: Config, store: Optional[CheckpointStore] = None, *,
          allow_config_change: bool = False, launch_id: Optional[str] = None) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; call on every rank.

    Args:
        cfg: a config from :func:`eigenmap.train.checks.load_train_config` (resolved, checked;
            the entry point has applied :func:`eigenmap.train.resume.check_resume`).
        store: where checkpoints go and the latest is found; default: ``run_dir/checkpoints``.
        allow_config_change: the user allowed settings that change the checkpoint's meaning
            (``--allow-config-change``): a checkpoint of another worker count may load.
        launch_id: the launcher's id of this start, recorded in ``status.json`` so that the
            launcher (its only reader) can tell this start's status from an earlier one's.

    Returns:
        Summary (the same keys as ``run_dir/status.json``): ``status`` ("finished",
        "nonfinite", "preempted" or "interrupted"), ``step``, ``epoch`` (of the last step,
        counted from 1 as the console counts), ``total_steps``, ``metrics``, ``message``.
    """
    device = pick_device(cfg)
    init_process_group(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != cfg.dist.num_workers:
        raise ConfigError(f"config key 'dist.num_workers' is {cfg.dist.num_workers} but this job has {world} "
                          f"processes; set dist.num_workers={world}")
    _use_device(cfg, device)
    run = RunDir(cfg.train.run_dir)
    if rank == 0:
        run.path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.config)
    store = store or LocalCheckpointStore(run.checkpoints, cfg.train.keep_checkpoints)
    loader = build_loader(cfg, rank=rank, world_size=world, device=device)
    plan = _plan(cfg, len(loader))
    model = _setup_model(cfg, device, world)
    engine, optimizer = build_engine(cfg, model, build_optimizer(model, cfg), device, precision_of(cfg, device))
    if cfg.dist.compile:
        engine.compile()  # torch.compile of the module's forward, state-dict keys unchanged
    augment = build_augment(cfg, rank=rank, device=device, channels_last=model.channels_last)
    state, resumed_from = TrainerState(), None
    with store.latest() as ckpt:
        if ckpt is not None:
            state = _resume(cfg, ckpt, engine, augment, plan, allow_config_change)
            resumed_from = state.step
        if rank == 0:  # before the logger cuts metrics.jsonl back to the start
            print(f"train: {start_sentence(run.path, ckpt, state.step)}", file=sys.stderr, flush=True)
    _record_worker(run, rank, device, resumed_from)
    logger = RunLogger(run.path, rank=rank, total_steps=plan.total_steps, start_step=state.step,
                       steps_per_epoch=plan.steps_per_epoch, progress_bar=cfg.train.progress_bar,
                       tensorboard=cfg.train.tensorboard)
    run_info = {"config": to_dict(cfg), "data": dataset_identity(cfg.data.train_path)}
    parts = WorkerParts(engine, optimizer, loader, augment, store, logger, StopRequest(run.path), run_info)
    try:
        with stop_on_signals():
            summary = _loop(cfg, parts, plan, state, device)
    finally:
        logger.close()
    with full_parameters(engine) if summary["status"] == "finished" else contextlib.nullcontext():
        if rank == 0 and summary["status"] == "finished":  # under ZeRO 3 every rank helps gather
            summary["weights"] = {k: str(v) for k, v in export_weights(engine.module, run.path).items()}
    if rank == 0:
        atomic_write_text(run.status, json.dumps({**summary, "launch_id": launch_id}, indent=1))
    dist.barrier()
    return summary


def _plan(cfg: Config, loader_steps: int) -> StepPlan:
    """The run's plan from the resolved config, checked against the loader this worker built:
    the launcher planned it from the same sharding rule, so a difference is a bug, not a setting."""
    try:
        plan = StepPlan.of(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if plan.steps_per_epoch != loader_steps:
        raise RuntimeError(f"the config plans {plan.steps_per_epoch} steps per epoch (derived.steps_per_epoch) but "
                           f"this worker's loader has {loader_steps}: the data changed after the config was resolved, "
                           "or the planning rule and the loader's sharding disagree")
    return plan


def _resume(cfg: Config, ckpt: Path, engine: Any, augment: BatchAugment, plan: StepPlan,
            allow_config_change: bool) -> TrainerState:
    """Restore ``ckpt``; where the global batch changed (allowed), re-derive the loader position."""
    state = read_checkpoint(ckpt, engine, augment, allow_world_change=allow_config_change)
    old_derived = read_meta(ckpt).get("config", {}).get("derived", {})
    old_batch = old_derived.get("global_batch_size")
    moved = reposition(state, old_global_batch=old_batch or cfg.derived.global_batch_size,
                       new_global_batch=cfg.derived.global_batch_size, steps_per_epoch=plan.steps_per_epoch)
    if dist.get_rank() == 0:  # the start sentence has said where it resumes
        if moved != state:
            log.warning("loader position re-derived for global batch %d (was %s): epoch %d, step %d in epoch",
                        cfg.derived.global_batch_size, old_batch, moved.epoch + 1, moved.step_in_epoch)
        _warn_replanned(old_derived, plan, state.step)
    return moved


def _warn_replanned(old: dict, plan: StepPlan, step: int) -> None:
    """A resume allowed to change the plan follows the new one from ``step``: say where the lr goes."""
    before = (old.get("total_steps"), old.get("warmup_steps"))
    if None in before or before == (plan.total_steps, plan.warmup_steps):
        return
    was = StepPlan(plan.steps_per_epoch, before[0], before[1], plan.final_lr_ratio)
    log.warning("the schedule follows the new plan from step %d: %d planned steps (was %d), %d warm-up (was %d); "
                "the lr there is %.4g of its peak (the old plan: %.4g)", step, plan.total_steps, was.total_steps,
                plan.warmup_steps, was.warmup_steps, plan.lr_factor(step), was.lr_factor(step))


class _RateWindow:
    """Images per second per worker since the last log or checkpoint (which it leaves out)."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.restart()

    def restart(self) -> None:
        self.start, self.steps = time.perf_counter(), 0

    def rate(self) -> float:
        return self.steps * self.batch_size / max(time.perf_counter() - self.start, 1e-9)


def _loop(cfg: Config, parts: WorkerParts, plan: StepPlan, state: TrainerState,
          device: torch.device) -> dict[str, Any]:
    """Steps until ``plan.total_steps``; reads values back only at log and checkpoint steps."""
    t = cfg.train
    window = _RateWindow(cfg.data.batch_size_per_worker)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # device-side: no host sync per step
    solo = dist.get_world_size() == 1  # no other rank to agree with: a stop request is seen at every step
    metrics: dict[str, float] = {}
    parts.engine.train()
    while state.step < plan.total_steps:
        parts.loader.set_epoch(state.epoch, start_step=state.step_in_epoch)
        epoch_start = state.step
        # colour/blur/solarize batched on the training device, the next batch while this step
        # runs (a side stream on GPUs); checkpoints take the augmentation's state from `ahead`
        ahead = AugmentAhead(parts.loader, parts.augment)
        for x1, x2, labels in ahead:
            set_lr(parts.optimizer, plan.lr_factor(state.step))
            weight_decay = plan.weight_decay_at(state.step)
            if weight_decay is not None:
                set_weight_decay(parts.optimizer, weight_decay)
            out = train_step(parts.engine, x1, x2, labels, state.step)
            nonfinite |= ~torch.isfinite(out["total"].detach())
            state.step += 1
            state.step_in_epoch += 1
            window.steps += 1
            parts.logger.step()
            epoch_end, last = state.step_in_epoch == plan.steps_per_epoch, state.step == plan.total_steps
            log_now = state.step % t.log_every_steps == 0 or epoch_end or last
            save_now = state.step % t.checkpoint_every_steps == 0 or epoch_end or last
            if not (log_now or save_now or (solo and parts.stop.requested())):
                continue
            # the loss can stay finite while BN or L2-BN statistics overflow: check both, and a
            # stop request (SIGTERM, Ctrl-C), in ONE collective, so every rank stops at the same step
            reason = parts.stop.reason()
            local = torch.stack([nonfinite | _nonfinite_state(parts.model),
                                 torch.tensor(reason == PREEMPTED, device=device),
                                 torch.tensor(reason == INTERRUPTED, device=device)])
            stop_nonfinite, preempted, interrupted = dist.any_rank(local)
            stop_requested = INTERRUPTED if interrupted else PREEMPTED if preempted else None  # Ctrl-C wins
            if stop_nonfinite:
                return _stop_nonfinite(state, out, plan)
            if log_now:
                metrics = _log(parts, state, out, window.rate())
            if epoch_end:
                stats = parts.model.statistics()
                parts.logger.spectrum(state.step, stats.eigenvalues if stats is not None else None)
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            if save_now or stop_requested:
                _save(parts, state, metrics, ahead)
            window.restart()  # rates leave out logging and checkpoints
            if stop_requested:
                return _stop_requested(stop_requested, state, plan, metrics)
            if epoch_end or last:
                break
        if state.step == epoch_start:  # an epoch without a batch would repeat forever
            raise RuntimeError(f"the loader yielded no batch for epoch {state.epoch + 1} from step "
                               f"{state.step_in_epoch} of {plan.steps_per_epoch} while "
                               f"{plan.total_steps - state.step} steps remain")
    return _summary("finished", state, plan, metrics, f"all {plural(state.step, 'step')} of the plan trained")


def _summary(status: str, state: TrainerState, plan: StepPlan, metrics: dict, message: str) -> dict[str, Any]:
    """``epoch`` counts from 1, as the console does: the epoch the last trained step is in (the
    loop's 0-based ``state.epoch`` has already moved on at an epoch's end)."""
    epoch = state.epoch + 1 if state.step_in_epoch else state.epoch
    return {"status": status, "step": state.step, "epoch": epoch, "total_steps": plan.total_steps,
            "metrics": metrics, "message": message}


def _save(parts: WorkerParts, state: TrainerState, metrics: dict[str, float], ahead: AugmentAhead) -> None:
    def write(path: Path) -> None:  # the augmentation's state as of the next batch, not the one augmented ahead
        write_checkpoint(path, parts.engine, state, ahead, metrics, parts.run_info)

    parts.store.save(state.step, write, {**metrics, "step": state.step, "epoch": state.epoch})


def _log(parts: WorkerParts, state: TrainerState, out: dict[str, torch.Tensor], rate: float) -> dict[str, float]:
    """Every term the model returned (NeuralEF's alpha among them) and the lr, read in one go."""
    values = torch.stack([v.detach().float() for v in out.values()]).tolist()  # one host read
    metrics = {**dict(zip(out, values)), "lr": parts.optimizer.param_groups[0]["lr"]}
    parts.logger.scalars(state.step, state.epoch, metrics, images_per_sec_per_worker=rate,
                         world_size=dist.get_world_size())
    return metrics


def _nonfinite_state(module: torch.nn.Module) -> torch.Tensor:
    """Device bool: some floating parameter or buffer holds a NaN or an inf."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return ~torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def _stop_nonfinite(state: TrainerState, out: dict, plan: StepPlan) -> dict[str, Any]:
    values = {k: float(v.detach().float()) for k, v in out.items()}
    message = (f"non-finite loss or model state by step {state.step} (last values {values}); stopped without saving, "
               f"the last good checkpoint stays the latest. Lower optim.base_lr or set optim.grad_clip.")
    log.error(message)
    return _summary("nonfinite", state, plan, values, message)


_STOP_CAUSES = {PREEMPTED: "on request (SIGTERM)", INTERRUPTED: "on Ctrl-C (SIGINT)"}


def _stop_requested(reason: str, state: TrainerState, plan: StepPlan, metrics: dict) -> dict[str, Any]:
    """The summary of a run stopped by SIGTERM (``reason`` "preempted") or Ctrl-C ("interrupted"),
    its checkpoint saved."""
    return _summary(reason, state, plan, metrics, f"stopped {_STOP_CAUSES[reason]} at step {state.step} with a "
                    "checkpoint saved")


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m eigenmap.train.worker CONFIG [key=value ...] [--json PATH] [--allow-config-change]``
    (plain or torchrun); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m eigenmap.train.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config, e.g. configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--json", default=None, help="write the run summary here (rank 0)")
    parser.add_argument(ALLOW_FLAG, action="store_true", help=ALLOW_HELP)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # rank 0 of torchrun (or the one plain process) holds the run directory's lock and speaks
    lead = int(os.environ.get("RANK", "0")) == 0
    rerun = command_line("python -m eigenmap.train.worker", args.config, *args.overrides,
                         *(["--json", args.json] if args.json else []),
                         *([ALLOW_FLAG] if args.allow_config_change else []))
    cfg: Optional[Config] = None
    with stop_on_signals(announce=lead):  # from the start: a signal during set-up stops at the first step
        try:
            cfg = load_train_config(args.config, args.overrides)
            with starting_run(cfg, allow_config_change=args.allow_config_change, lead=lead):
                # every rank reads the same run directory, so all of them skip a finished run
                summary = finished_run(cfg) or train(cfg, allow_config_change=args.allow_config_change)
        except REFUSALS as e:  # also found once the job's processes are known
            print(f"error: {e}", file=sys.stderr)
            return exit_code("refused")
        except KeyboardInterrupt:  # the second Ctrl-C
            summary = {"status": INTERRUPTED, "message": ABORTED}
        finally:
            # this process made the group (Ray Train tears down its own): NCCL otherwise warns at
            # exit and its communicators outlive the run
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    if not lead:
        return exit_code(summary["status"])
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return report_end("python -m eigenmap.train.worker", summary, run_dir=cfg.train.run_dir if cfg else None,
                      rerun=rerun)


if __name__ == "__main__":
    sys.exit(main())
