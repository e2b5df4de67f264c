"""The run report a person reads: ``RUN/report/report.md`` with its plots, from the run's files.

It reads what the other commands left in the run directory and draws nothing from memory:

- ``config.yaml``, ``status.json``, ``metrics.jsonl``, ``attempts.jsonl`` (training);
- ``model.pt`` (the eigenvalue estimates, through :func:`eigenmap.run.load_run`);
- ``eval/probe/*/probe.json`` (``eigenmap probe``), ``eval/retrieval/codes/*/`` (``eigenmap retrieve``):
  the newest of each is shown, and every evaluation the run holds is listed;
- ``demo.json`` when ``eigenmap demo`` made the run (data, splits, the wall time of each stage).

A part whose files are missing is listed as such, with the command that makes it. The report
opens with its findings in words (:mod:`launch.findings`: eigenvalue order, prefix against the
baselines at each length, accuracies and mAP next to chance, the speed-up's spread), and writes
the same figures to ``RUN/report/report.json``.
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
from eigenmap.eval.spectrum import eigenvalue_order, spectrum_figure
from eigenmap.run import RunDir, load_run
from eigenmap.train.schedule import plan_in_words, plural
from launch.findings import findings_lines, run_findings

__all__ = ["write_run_report", "knn_capped_note"]


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def plot_training(rows: list[dict], path: Path) -> None:
    """The objective and its parts, the reg and its weight, the online classifier (cross-entropy
    and accuracy, each on its own axis) and the lr against the step: four panels."""
    fig = Figure(figsize=(10, 7), dpi=110)
    FigureCanvasAgg(fig)
    steps = [r["step"] for r in rows]
    panels = [("objective = loss + alpha * reg", [("objective", "objective"), ("loss", "loss (-2/k sum diag)")], []),
              ("regulariser reg (off-diagonal) and its weight", [("reg", "reg")], [("alpha", "alpha (right axis)")]),
              ("online classifier (monitoring, detached)", [("cls_loss", "cross-entropy")],
               [("acc", "batch accuracy (right axis)")]),
              ("learning rate (schedule)", [("lr", "lr of the weights")], [])]
    for i, (title, left, right) in enumerate(panels):
        ax = fig.add_subplot(2, 2, i + 1)
        handles = _plot_series(ax, steps, rows, left, first_colour=0)
        if right and any(key in r for key, _ in right for r in rows):
            handles += _plot_series(ax.twinx(), steps, rows, right, first_colour=3)  # a twin axis of its own scale
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimiser step")
        ax.grid(True, alpha=0.3)
        if handles:
            ax.legend(handles=handles, fontsize=8)
    fig.suptitle("Training curves (metrics.jsonl, one point per log step)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)


def _plot_series(ax, steps: list[int], rows: list[dict], series: list[tuple[str, str]], *, first_colour: int) -> list:
    """Plot each (key, label) present in every row (an older run may lack "objective": its
    "total" is shown instead); returns the line handles."""
    handles = []
    for j, (key, label) in enumerate(series):
        if key == "objective" and not all("objective" in r for r in rows):
            key, label = "total", "total (objective + online cross-entropy)"
        values = [r.get(key) for r in rows]
        if all(v is not None for v in values):
            handles += ax.plot(steps, values, label=label, linewidth=1.4, color=f"C{first_colour + j}")
    return handles


def _config_summary(cfg) -> list[str]:
    m, l, o, d, di, t = cfg.model, cfg.loss, cfg.optim, cfg.data, cfg.dist, cfg.train
    alpha = f"alpha {l.alpha:g}" + (f" ramped to {l.alpha_final:g}" if l.alpha_final is not None else "")
    loss = f"{l.name}" + (f" ({alpha}, t {l.t}, {'stop-grad' if l.stop_grad else 'without stop-grad'})"
                          if l.name == "neuralef" else "")
    return [
        "| setting | value |", "|---|---|",
        f"| encoder | {m.arch}{', small-image stem' if m.small_image_stem else ''} |",
        f"| projector | {m.projector_hidden_dim} hidden -> k = {m.projector_out_dim} outputs |",
        f"| objective | {loss} |",
        f"| optimiser | {o.name}, peak lr {cfg.derived.lr:.4g} (base {o.base_lr} per 256), "
        f"{_warmup_words(cfg)}, cosine to {o.final_lr_ratio:g} x, weight decay {o.weight_decay:g} |",
        f"| data | `{d.train_path}`, {d.resolution} px crops, batch {d.batch_size_per_worker} per worker |",
        f"| workers | {di.num_workers} x ({di.cpus_per_worker} CPU, {di.gpus_per_worker:g} GPU), global batch "
        f"{cfg.derived.global_batch_size}, precision {di.precision}, ZeRO {di.zero_stage} |",
        f"| length | {_length_words(cfg)} |",
        f"| seed | {t.seed} |",
    ]


def _warmup_words(cfg) -> str:
    """The warm-up the run had: its planned steps (with train.max_steps, optim.warmup_epochs is a
    share of the run, not a count of epochs), or the config's epochs before the run is planned."""
    if cfg.derived.warmup_steps is not None:
        return f"linear warm-up over {plural(cfg.derived.warmup_steps, 'step')}"
    return plural(cfg.optim.warmup_epochs, "warm-up epoch")


def _length_words(cfg) -> str:
    """The planned run (config.yaml's derived plan), or the config's keys for a run resolved
    before the plan was recorded."""
    if cfg.derived.total_steps is not None:
        return plan_in_words(cfg)
    t = cfg.train
    return plural(t.epochs, "epoch") + (f", at most {plural(t.max_steps, 'step')}" if t.max_steps else "")


def _training_section(run_dir: Path, rows: list[dict], status: Optional[dict], report: Path,
                      steps_per_epoch: Optional[int]) -> list[str]:
    lines = ["## Training", ""]
    if status:
        step, total = status.get("step"), status.get("total_steps")
        message = status.get("message", "").strip()
        lines.append(f"Status: **{status.get('status')}** at step {step} of {total} planned"
                     f"{_epoch_words(step, total, steps_per_epoch)}." + (f" Its status message: \"{message}\"."
                                                                          if message else ""))
    attempts = RunDir(run_dir).read_attempts()
    if attempts:
        lines.append(_attempts_words([a.get("resumed_from_step") for a in attempts]))
    if rows:
        rates = [r["images_per_sec"] for r in rows if r.get("images_per_sec")]
        first, last = rows[0], rows[-1]
        name = "objective (loss + alpha x reg)" if "objective" in first else "total (objective + online cross-entropy)"
        value = "objective" if "objective" in first else "total"
        lines += ["", f"The {name} at the first log step ({first['step']}): {first[value]:.4g}; at the last "
                      f"({last['step']}): {last[value]:.4g}. Throughput: median {statistics.median(rates):.0f} "
                      "images/s over all workers (each image gives two views).", ""]
        plot_training(rows, report / "training_curves.png")
        lines.append("![training curves](training_curves.png)")
    else:
        lines.append("No metrics.jsonl yet: the run has not logged a step.")
    lines += ["", f"TensorBoard events: `tensorboard --logdir {RunDir(run_dir).tensorboard}`", ""]
    return lines


def _epoch_words(step: Optional[int], total: Optional[int], steps_per_epoch: Optional[int]) -> str:
    """", in epoch 1 of 2 (468 steps each)": epochs counted from 1, as the console counts them."""
    if not step or not total or not steps_per_epoch:
        return ""
    epoch, epochs = -(-step // steps_per_epoch), -(-total // steps_per_epoch)
    return f", in epoch {epoch} of {epochs} ({plural(steps_per_epoch, 'step')} each)"


def _attempts_words(resumed_from: list[Optional[int]]) -> str:
    """The starts in words, e.g. "2 starts: a fresh start, then a resume from step 40"."""
    words = ["a fresh start" if step is None else f"a resume from step {step}" for step in resumed_from]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + ", then " + words[-1]
    return f"Worker-group starts: {plural(len(words), 'start')}: {listed}."


def _spectrum_section(run_dir: Path, report: Path) -> tuple[list[str], Optional[float], bool]:
    """The section's lines, the Spearman order (None when unknown) and whether the objective has
    eigenvalue estimates at all."""
    try:
        stats = load_run(run_dir).model.statistics()
    except ValueError as e:
        return ["## Eigenvalue spectrum", "", f"Not available: {e}", ""], None, True
    if stats is None:
        return (["## Eigenvalue spectrum", "", "Not an eigenfunction objective: no eigenvalue estimates.", ""],
                None, False)
    ev = stats.eigenvalues.numpy()
    spectrum_figure(ev).savefig(report / "spectrum.png")
    order = eigenvalue_order(ev)
    return ["## Eigenvalue spectrum", "",
            f"{len(ev)} eigenvalue estimates after {stats.num_updates} updates; first eight: "
            f"{', '.join(f'{v:.3f}' for v in ev[:8])}. Rank correlation between output index and estimate "
            f"(Spearman, -1 = ordered as the stop-grad variant promises): {order:.3f}.", "",
            "![eigenvalue spectrum](spectrum.png)", ""], order, True


def _evaluation_section(run_dir: Path) -> list[str]:
    reports = RunDir(run_dir).probe_reports()
    probe = _read_json(reports[-1]) if reports else None
    if probe is None:
        return ["## Linear probe and kNN", "",
                f"Not run yet: `eigenmap probe {run_dir} --train TRAIN --val VAL`.", ""]
    p, knn = probe["linear_probe"], probe["knn"]
    classes = probe.get("num_classes")
    chance = f" Chance top-1: {100 / classes:.2f} (1 of {classes} classes)." if classes else ""
    lines = ["## Linear probe and kNN", "",
             f"Frozen encoder; training set {probe['train']['num_images']} images, validation set "
             f"{probe['val']['num_images']} images (`{probe['val']['dataset']}`), on {probe['device']}.{chance}", "",
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


def _retrieval_section(run_dir: Path, report: Path, reports: list[Path], findings: Optional[dict]) -> list[str]:
    """The newest code-retrieval report of ``reports`` (``RunDir.retrieval_reports("codes")``)."""
    folder = reports[-1].parent if reports else run_dir
    table = folder / "retrieval.md"
    if not reports or not table.is_file():
        return ["## Retrieval with adaptive-length codes", "",
                f"Not run yet: `eigenmap retrieve {run_dir} --database TRAIN --queries VAL`.", ""]
    lines = ["## Retrieval with adaptive-length codes", ""]
    body = table.read_text().splitlines()
    lines += [line for line in body if not line.startswith("# ")]  # its own title becomes this section's
    chance = findings["chance"] if findings else None
    if chance and not any("chance" in line.lower() for line in body):
        lines += ["", f"Chance level: mAP@{findings['R']} {chance['map']:.4f} ({chance['definition']})."]
    for png, caption in (("retrieval_map.png", "mAP against code length"), ("retrieval_qps.png", "queries/s")):
        if (folder / png).is_file():
            shutil.copyfile(folder / png, report / png)
            lines += ["", f"![{caption}]({png})"]
    return lines + [""]


def _demo_section(demo: Optional[dict]) -> list[str]:
    if not demo:
        return []
    seconds = demo.get("stage_seconds", {})
    lines = ["## The demo's data and stages", "", demo.get("data_statement", ""), "",
             "| stage | wall seconds |", "|---|---:|"]
    lines += [f"| {stage} | {s:.1f} |" for stage, s in seconds.items()]
    lines += [f"| **all before this report** | **{sum(seconds.values()):.1f}** |", "",
              f"Device: {demo.get('device', 'cpu')}.", ""]
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
    return ["## Evaluations in this run", "", "| folder | inputs |", "|---|---|", *rows, ""]


def write_run_report(run_dir: Path) -> Path:
    """Write ``RUN/report/report.md`` with its PNGs, and ``RUN/report/report.json`` (the findings
    as numbers), from the run directory's files; returns the markdown's path."""
    run_dir = Path(run_dir).resolve()
    run = RunDir(run_dir)
    report = run.report
    report.mkdir(parents=True, exist_ok=True)
    cfg = load_config(run.config)
    rows = run.read_metrics()
    status = run.read_status()
    demo = run.read_demo()
    spectrum, spearman, eigenfunctions = _spectrum_section(run_dir, report)
    probes, retrievals = run.probe_reports(), run.retrieval_reports("codes")
    probe = _read_json(probes[-1]) if probes else None  # the newest of each is shown
    retrieval = _read_json(retrievals[-1]) if retrievals else None
    findings = run_findings(spearman=spearman, eigenfunctions=eigenfunctions, retrieval=retrieval, probe=probe,
                            num_classes=cfg.model.num_classes)
    findings["run"] = {"run_dir": str(run_dir), "title": _title(run_dir, cfg, status)}
    lines = [f"# {findings['run']['title']}", "", f"Run directory `{run_dir}`; regenerate with "
             f"`eigenmap report {run_dir}`; the figures below are also in `report/report.json`.", ""]
    lines += findings_lines(findings)
    lines += ["## Configuration", "", *_config_summary(cfg), "",
              f"The whole resolved config: `{run.config}`.", ""]
    lines += _demo_section(demo)
    lines += _training_section(run_dir, rows, status, report, cfg.derived.steps_per_epoch)
    lines += spectrum
    lines += _evaluation_section(run_dir)
    lines += _retrieval_section(run_dir, report, retrievals, findings["retrieval"])
    lines += _evaluations_listing(run)
    (report / "report.json").write_text(json.dumps(findings, indent=1, allow_nan=False, default=_plain) + "\n")
    path = report / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _title(run_dir: Path, cfg, status: Optional[dict]) -> str:
    """The title naming the run, e.g. "Run demo/run: resnet18, NeuralEF stop-grad, k = 256, 150 steps on
    fashion-mnist-train"."""
    m, l = cfg.model, cfg.loss
    loss = ("NeuralEF " + ("stop-grad" if l.stop_grad else "without stop-grad")) if l.name == "neuralef" else l.name
    steps = (status or {}).get("step") or cfg.derived.total_steps
    length = f", {plural(steps, 'step')}" if steps else ""
    data = Path(cfg.data.train_path).stem if cfg.data.train_path else "no data"
    return f"Run {run_dir.parent.name}/{run_dir.name}: {m.arch}, {loss}, k = {m.projector_out_dim}{length} on {data}"


def _plain(value):
    """JSON for the numpy scalars the figures may hold."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
