"""The run report a person reads: ``RUN/report/report.md`` with its plots, from the run's files.

It reads what the other commands left in the run directory and draws nothing from memory:

- ``config.yaml``, ``status.json``, ``metrics.jsonl``, ``attempts.jsonl`` (training);
- ``model.pt`` (the eigenvalue estimates, through :func:`eigenmap.run_dir.load_run`);
- ``eval/probe/*/probe.json`` (``eigenmap probe``), ``eval/retrieval/codes/*/`` (``eigenmap retrieve``):
  the newest of each is shown, and every evaluation the run holds is listed;
- ``demo.json`` when ``eigenmap demo`` made the run (data, splits, the wall time of each stage).

A part whose files are missing is listed as such, with the command that makes it.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eigenmap.config import load_config
from eigenmap.eval.spectrum import eigenvalue_order
from eigenmap.run_dir import load_run
from eigenmap.run_layout import RunDir

__all__ = ["write_run_report", "knn_capped_note"]


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def plot_training(rows: list[dict], path: Path) -> None:
    """Objective, its parts, the online classifier and the lr against the step: four panels."""
    fig = Figure(figsize=(10, 7), dpi=110)
    FigureCanvasAgg(fig)
    steps = [r["step"] for r in rows]
    panels = [("objective: total = loss + alpha * reg", [("total", "total"), ("loss", "loss (-2/k sum diag)")]),
              ("regulariser reg (off-diagonal)", [("reg", "reg")]),
              ("online classifier (monitoring)", [("cls_loss", "cross-entropy"), ("acc", "accuracy (batch)")]),
              ("learning rate (schedule)", [("lr", "peak-scaled lr")])]
    for i, (title, series) in enumerate(panels):
        ax = fig.add_subplot(2, 2, i + 1)
        for key, label in series:
            values = [r.get(key) for r in rows]
            if all(v is not None for v in values):
                ax.plot(steps, values, label=label, linewidth=1.4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("value")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training curves (metrics.jsonl, one point per log step)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)


def plot_spectrum(eigenvalues: np.ndarray, path: Path) -> None:
    """The eigenvalue estimates in output order (what a prefix keeps) and sorted."""
    fig = Figure(figsize=(8, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    index = np.arange(1, len(eigenvalues) + 1)
    ax.plot(index, eigenvalues, ".-", markersize=3, linewidth=1, label="estimate of output j (output order)")
    ax.plot(index, np.sort(eigenvalues)[::-1], "--", linewidth=1, label="the same, sorted (decreasing)")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("output index j (log2 scale): a code of length m keeps j <= m")
    ax.set_ylabel("eigenvalue estimate (L2-BatchNorm EMA)")
    ax.set_title("Eigenvalue spectrum of the trained eigenfunctions", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _config_summary(cfg) -> list[str]:
    m, l, o, d, di, t = cfg.model, cfg.loss, cfg.optim, cfg.data, cfg.dist, cfg.train
    loss = f"{l.name}" + (f" (alpha {l.alpha}, t {l.t}, {'stop-grad' if l.stop_grad else 'without stop-grad'})"
                          if l.name == "neuralef" else "")
    return [
        "| setting | value |", "|---|---|",
        f"| encoder | {m.arch}{', small-image stem' if m.small_image_stem else ''} |",
        f"| projector | {m.projector_hidden_dim} hidden -> k = {m.projector_out_dim} outputs |",
        f"| objective | {loss} |",
        f"| optimiser | {o.name}, peak lr {cfg.derived.lr:.4g} (base {o.base_lr} per 256), {o.warmup_epochs:g} warm-up "
        f"epochs, cosine to {o.final_lr_ratio:g} x, weight decay {o.weight_decay:g} |",
        f"| data | `{d.train_path}`, {d.resolution} px crops, batch {d.batch_size_per_worker} per worker |",
        f"| workers | {di.num_workers} x ({di.cpus_per_worker} CPU, {di.gpus_per_worker:g} GPU), global batch "
        f"{cfg.derived.global_batch_size}, precision {di.precision}, ZeRO {di.zero_stage} |",
        f"| length | {t.epochs} epochs{f', at most {t.max_steps} steps' if t.max_steps else ''}, seed {t.seed} |",
    ]


def _training_section(run_dir: Path, rows: list[dict], status: Optional[dict], report: Path) -> list[str]:
    lines = ["## Training", ""]
    if status:
        lines.append(f"Status: **{status.get('status')}** at step {status.get('step')} of {status.get('total_steps')} "
                     f"(epoch {status.get('epoch')}). {status.get('message', '')}")
    attempts = RunDir(run_dir).read_attempts()
    if attempts:
        lines.append(f"Worker-group starts: {len(attempts)} (resumed from steps "
                     f"{[a.get('resumed_from_step') for a in attempts]}).")
    if rows:
        rates = [r["images_per_sec"] for r in rows if r.get("images_per_sec")]
        first, last = rows[0], rows[-1]
        lines += ["", f"Objective at the first log step ({first['step']}): {first['total']:.4g}; at the last "
                      f"({last['step']}): {last['total']:.4g}. Throughput: median {statistics.median(rates):.0f} "
                      "images/s over all workers (each image gives two views).", ""]
        plot_training(rows, report / "training_curves.png")
        lines.append("![training curves](training_curves.png)")
    else:
        lines.append("No metrics.jsonl yet: the run has not logged a step.")
    lines += ["", f"TensorBoard events: `tensorboard --logdir {RunDir(run_dir).tensorboard}`", ""]
    return lines


def _spectrum_section(run_dir: Path, report: Path) -> list[str]:
    try:
        stats = load_run(run_dir).model.statistics()
    except ValueError as e:
        return ["## Eigenvalue spectrum", "", f"Not available: {e}", ""]
    if stats is None:
        return ["## Eigenvalue spectrum", "", "Not an eigenfunction objective: no eigenvalue estimates.", ""]
    ev = stats.eigenvalues.numpy()
    plot_spectrum(ev, report / "spectrum.png")
    order = eigenvalue_order(ev)
    return ["## Eigenvalue spectrum", "",
            f"{len(ev)} eigenvalue estimates after {stats.num_updates} updates; first eight: "
            f"{', '.join(f'{v:.3f}' for v in ev[:8])}. Rank correlation between output index and estimate "
            f"(Spearman, -1 = ordered as the stop-grad variant promises): {order:.3f}.", "",
            "![eigenvalue spectrum](spectrum.png)", ""]


def _evaluation_section(run_dir: Path) -> list[str]:
    reports = RunDir(run_dir).probe_reports()
    probe = _read_json(reports[-1]) if reports else None
    if probe is None:
        return ["## Linear probe and kNN", "",
                f"Not run yet: `eigenmap probe {run_dir} --train TRAIN --val VAL`.", ""]
    p, knn = probe["linear_probe"], probe["knn"]
    lines = ["## Linear probe and kNN", "",
             f"Frozen encoder; training set {probe['train']['num_images']} images, validation set "
             f"{probe['val']['num_images']} images (`{probe['val']['dataset']}`), on {probe['device']}.", "",
             f"Linear probe ({p['protocol']}, {p['epochs']} epochs, SGD lr {p['lr']}, batch {p['batch_size']}): "
             f"**top-1 {p['top1']:.2f}**, top-5 {p['top5']:.2f} after the final epoch (best epoch {p['best_epoch']}: "
             f"top-1 {p['best_top1']:.2f}, shown for reference only).", "",
             "| weighted kNN top-1 (T = {}) | ".format(knn["temperature"])
             + " | ".join(f"k = {k}" for k in knn["ks"]) + " |",
             "|---|" + "---:|" * len(knn["ks"])]
    for name, accs in knn["top1"].items():
        lines.append(f"| {name} | " + " | ".join(f"{accs[str(k)]:.2f}" for k in knn["ks"]) + " |")
    capped = knn_capped_note(knn, probe["train"]["num_images"])
    return lines + ["", capped, ""] if capped else lines + [""]


def knn_capped_note(knn: dict, n_train: int) -> str:
    """A sentence naming each kNN k above the training set's size (all its images then vote), or ''."""
    over = [k for k in knn["ks"] if k > n_train]
    if not over:
        return ""
    ks = ", ".join(f"k = {k}" for k in over)
    verb = "exceeds" if len(over) == 1 else "exceed"
    return f"{ks} {verb} the {n_train} training images: all {n_train} vote, weighted by similarity."


def _retrieval_section(run_dir: Path, report: Path) -> list[str]:
    reports = RunDir(run_dir).retrieval_reports("codes")
    folder = reports[-1].parent if reports else run_dir
    table = folder / "retrieval.md"
    if not reports or not table.is_file():
        return ["## Retrieval with adaptive-length codes", "",
                f"Not run yet: `eigenmap retrieve {run_dir} --database TRAIN --queries VAL`.", ""]
    lines = ["## Retrieval with adaptive-length codes", ""]
    body = table.read_text().splitlines()
    lines += [line for line in body if not line.startswith("# ")]  # its own title becomes this section's
    for png, caption in (("retrieval_map.png", "mAP against code length"), ("retrieval_qps.png", "queries/s")):
        if (folder / png).is_file():
            shutil.copyfile(folder / png, report / png)
            lines += ["", f"![{caption}]({png})"]
    return lines + [""]


def _demo_section(demo: Optional[dict]) -> list[str]:
    if not demo:
        return []
    lines = ["## The demo's data and stages", "", demo.get("data_statement", ""), "",
             "| stage | wall seconds |", "|---|---:|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in demo.get("stage_seconds", {}).items()]
    total = sum(demo.get("stage_seconds", {}).values())
    lines += [f"| **all** | **{total:.1f}** |", "", f"Device: {demo.get('device', 'cpu')}.", ""]
    return lines


def _evaluations_listing(run: RunDir) -> list[str]:
    """Every probe and retrieval report the run holds, with the inputs each was made from."""
    rows = []
    for path in run.probe_reports() + run.retrieval_reports():
        inputs = (_read_json(path) or {}).get("inputs") or {}
        sets = ", ".join(f"{role} `{value.get('path')}`" for role, value in inputs.items() if isinstance(value, dict))
        rows.append(f"| `{path.parent.relative_to(run.path)}` | {sets or 'not recorded'} |")
    if not rows:
        return []
    return ["## Evaluations in this run", "", "| report | inputs |", "|---|---|", *rows, ""]


def write_run_report(run_dir: Path) -> Path:
    """Write ``RUN/report/report.md`` and its PNGs from the run directory's files; returns its path."""
    run_dir = Path(run_dir).resolve()
    report = run_dir / "report"
    report.mkdir(parents=True, exist_ok=True)
    run = RunDir(run_dir)
    cfg = load_config(run.config)
    rows = run.read_metrics()
    status = run.read_status()
    demo = run.read_demo()
    lines = [f"# Run report: {run_dir.name}", "", f"Run directory `{run_dir}`; regenerate with "
             f"`eigenmap report {run_dir}`.", "", "## Configuration", "", *_config_summary(cfg), "",
             f"The whole resolved config: `{run_dir / 'config.yaml'}`.", ""]
    lines += _demo_section(demo)
    lines += _training_section(run_dir, rows, status, report)
    lines += _spectrum_section(run_dir, report)
    lines += _evaluation_section(run_dir)
    lines += _retrieval_section(run_dir, report)
    lines += _evaluations_listing(run)
    path = report / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
