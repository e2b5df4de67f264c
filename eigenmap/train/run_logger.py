"""Rank-0 observability: progress bar, TensorBoard, a metrics JSONL file.

Every method is a no-op on ranks other than 0, so the loop calls them unconditionally.
TensorBoard tags (read back by the tests):

- ``train/objective`` (loss + alpha * reg: what shapes the encoder), ``train/loss``,
  ``train/reg``, ``train/alpha`` (NeuralEF's reg weight), ``train/total`` (the objective plus
  the online classifier's cross-entropy: what the backward runs on), ``train/cls_loss``,
  ``train/online_acc``, ``train/lr``: at log steps;
- ``perf/images_per_sec_per_worker``, ``perf/images_per_sec``: source images (each gives two
  views) per second over the last log window;
- ``spectrum/eigenvalues`` (histogram) and ``spectrum/eigenvalues_plot`` (the run report's
  spectrum plot as an image): the L2-BatchNorm running eigenvalue estimates, every epoch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from eigenmap.durable import atomic_write_text
from eigenmap.eval.spectrum import spectrum_figure
from eigenmap.run import RunDir
from retrieval.progress import SlowdownWatch, clock

__all__ = ["RunLogger", "keep_rows_up_to"]

SCALAR_TAGS = {"objective": "train/objective", "loss": "train/loss", "reg": "train/reg", "alpha": "train/alpha",
               "total": "train/total", "cls_loss": "train/cls_loss", "acc": "train/online_acc", "lr": "train/lr"}


def keep_rows_up_to(path: Path, step: int) -> None:
    """Rewrite the JSONL file ``path`` with only its rows of ``step`` or before (atomically;
    a line cut short by a killed process is dropped too)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


class RunLogger:
    """Progress bar (step, epoch, objective, images/s, ETA), TensorBoard and ``metrics.jsonl``.

    Epochs are shown counted from 1 ("epoch 2/3": the step is in the second of three planned
    epochs), as the run report counts them; ``metrics.jsonl`` keeps the loop's 0-based ``epoch``
    index of the epoch each row's step is in.

    The bar is tqdm on a terminal; when stderr is not one (a Ray worker, a batch job's log) it
    is one text line per log step instead, which log collectors forward as it comes.

    A run that resumes from a checkpoint replays the steps after it: ``start_step`` (the
    checkpoint's step) cuts ``metrics.jsonl`` back to the rows up to it, and TensorBoard gets
    ``purge_step = start_step + 1``, which makes its readers drop the earlier attempt's events
    from that step on. Each step appears once in the logs a run leaves.

    Args:
        run_dir: TensorBoard events go to ``run_dir/tensorboard``, scalars also to
            ``run_dir/metrics.jsonl`` (one JSON object per log step).
        rank: only rank 0 writes or shows anything.
        total_steps, start_step: for the bar and its ETA; ``start_step``: where this attempt
            resumes (0 for a fresh start), see above.
        steps_per_epoch: for the planned epoch count shown beside the epoch (None: not shown).
    """

    def __init__(self, run_dir: Path, *, rank: int, total_steps: int, start_step: int = 0,
                 steps_per_epoch: Optional[int] = None, progress_bar: bool = True, tensorboard: bool = True):
        self.active = rank == 0
        self.text_progress = False
        self.bar = self.writer = self.jsonl = None
        if not self.active:
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            events = RunDir(run_dir).tensorboard
            earlier = events.is_dir() and any(events.iterdir())
            self.writer = SummaryWriter(log_dir=str(events), purge_step=start_step + 1 if earlier else None)
        keep_rows_up_to(RunDir(run_dir).metrics, start_step)
        self.jsonl = open(RunDir(run_dir).metrics, "a", buffering=1)
        self.total_steps, self.start_step, self.started = total_steps, start_step, time.perf_counter()
        self.epochs = -(-total_steps // steps_per_epoch) if steps_per_epoch else None
        # seconds per image in each log window: a window far below the run's own rate is said
        self.slowdown = SlowdownWatch("train (seconds per image)", "log window")
        self.text_progress = progress_bar and not sys.stderr.isatty()
        if progress_bar and not self.text_progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            desc="train", mininterval=1.0)

    def step(self, n: int = 1) -> None:
        """Advance the bar (host-only: no device synchronisation)."""
        if self.bar is not None:
            self.bar.update(n)

    def scalars(self, step: int, epoch: int, values: dict[str, float], *, images_per_sec_per_worker: float,
                world_size: int) -> None:
        """Log the values read at a log step (``loss``, ``reg``, ``total``, ``acc``, ``lr``...)."""
        if not self.active:
            return
        total_rate = images_per_sec_per_worker * world_size
        if total_rate > 0:
            self.slowdown.observe(1.0 / total_rate)  # seconds per image of this log window
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(SCALAR_TAGS.get(key, f"train/{key}"), value, step)
            self.writer.add_scalar("perf/images_per_sec_per_worker", images_per_sec_per_worker, step)
            self.writer.add_scalar("perf/images_per_sec", total_rate, step)
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({"step": step, "epoch": epoch, **values,
                                         "images_per_sec": total_rate,
                                         "images_per_sec_per_worker": images_per_sec_per_worker}) + "\n")
        shown_epoch = f"{epoch + 1}/{self.epochs}" if self.epochs else f"{epoch + 1}"
        objective = values.get("objective", values.get("total", float("nan")))
        if self.bar is not None:
            self.bar.set_postfix(epoch=shown_epoch, objective=f"{objective:.4g}", img_s=f"{total_rate:.0f}",
                                 refresh=False)
        elif self.text_progress:  # a log file or Ray's forwarded output: one line per log step, no \r
            done = step - self.start_step
            eta = (time.perf_counter() - self.started) / max(done, 1) * (self.total_steps - step)
            print(f"train: step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%) epoch {shown_epoch} "
                  f"objective {objective:.4g} images/s {total_rate:.0f} "
                  f"ETA {clock(eta)}", file=sys.stderr, flush=True)

    def spectrum(self, step: int, eigenvalues: Optional[torch.Tensor]) -> None:
        """The running eigenvalue estimates as a histogram and a line plot image."""
        if not self.active or self.writer is None or eigenvalues is None:
            return
        ev = eigenvalues.detach().float().cpu().numpy()
        self.writer.add_histogram("spectrum/eigenvalues", ev, step)
        self.writer.add_figure("spectrum/eigenvalues_plot", spectrum_figure(ev), step)  # the run report's plot

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
        self.bar = self.writer = self.jsonl = None
