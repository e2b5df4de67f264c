#!/usr/bin/env python
"""What the representations are worth: NeuralEF against the baselines at one budget.

Every method trains the same encoder (ResNet-18 at 64 px, k = 512 outputs, global batch 256)
with the same optimiser, schedule, augmentations, data order and seed; only the objective
differs:

  neuralef_stopgrad     NeuralEF, stop-grad variant (orders the eigenfunctions)
  neuralef              NeuralEF without stop-grad
  simclr                SimCLR (NT-Xent)
  barlow_twins          Barlow Twins
  spectral_contrastive  spectral contrastive loss
  matryoshka            Matryoshka (MRL): SimCLR's NT-Xent summed over the prefixes 8, 16, ..., k
  random_init           the same encoder and projector, untrained

and is evaluated the same way on the held-out set: linear probe on cached centre-crop features
(eval.* defaults), weighted kNN top-1 (k = 20 and 200), mAP@100 of the codes (database: the
training set, queries: the validation set) at full length and at 1/2 ... 1/64 of it, every
method's prefix against a random subset of its dimensions and PCA of its codes at each length,
and the eigenvalue ordering (Spearman correlation between output index and eigenvalue estimate:
-1 = perfectly ordered). Training
runs the worker loop as one plain process (``python -m eigenmap.train.worker``; no Ray); its
time is the sum of the logged step times (metrics.jsonl), so a resumed run counts each step once.

Everything goes under ``--out`` (default ``runs/bench_quality``): data files, one run directory
per method, the figures. Running the same command again resumes: finished runs and their
evaluations are reused, an interrupted run resumes from its last checkpoint.

  python tools/bench_quality.py --json F                # 15 epochs of Imagenette-96, all methods
  python tools/bench_quality.py --epochs 2 --methods neuralef_stopgrad random_init
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eigenmap.run import RunDir, export_weights, load_run, pair_name  # noqa: E402

# the one recipe every method shares (configs/imagenette_resnet18.yaml plus these)
RECIPE = [
    "model.arch=resnet18", "model.small_image_stem=false", "model.projector_hidden_dim=2048",
    "model.projector_out_dim=512",
    "optim.name=lars", "optim.base_lr=0.3", "optim.weight_decay=1.0e-6", "optim.warmup_epochs=2",
    "optim.final_lr_ratio=0.001",
    "data.resolution=64", "data.eval_resize=72", "data.batch_size_per_worker=256", "data.loader_workers=1",
    "dist.num_workers=1", "dist.zero_stage=0", "dist.max_failures=0",
    "train.log_every_steps=10", "train.checkpoint_every_steps=100", "train.keep_checkpoints=2",
    "train.progress_bar=true", "train.seed=0",
]
# what differs: the objective. NeuralEF's alpha: the paper's rule (doubling when k halves) gives 0.04
# at k = 512, but at this 15-epoch budget a constant alpha trades the representation for the order
# of the outputs (the README's alpha sweep, stop-grad: 0.04 gave probe 40.7 with short prefixes
# beating PCA; 0.01 gave 55.1 with prefixes no better than PCA). Stop-grad therefore ramps it:
# 0.01 at the first step (the representation), 0.13 at the last (the order). Ramps to 0.13 and 0.14
# both gave prefixes beating PCA at every length <= 1/8 with the eigenvalue order <= -0.8, 0.13 with
# the smaller gap to full length; a ramp to 0.1 lost to PCA at 32 dimensions, one to 0.15 missed
# the order, one to 0.2 lost the representation (probe 40.5); one held at 0.01 until 60% of the
# run (loss.alpha_ramp_start) and then rising to 0.3 lost to PCA at every length. The variant
# without stop-grad has no order to gain; 0.005 gave it a better probe than 0.01 (56.4 against 53.7).
METHODS = {
    "neuralef_stopgrad": ["loss.name=neuralef", "loss.stop_grad=true", "loss.alpha=0.01", "loss.alpha_final=0.13"],
    "neuralef": ["loss.name=neuralef", "loss.stop_grad=false", "loss.alpha=0.005"],
    "simclr": ["loss.name=simclr", "loss.temperature=0.1"],
    "barlow_twins": ["loss.name=barlow_twins", "loss.barlow_lambda=0.0051"],
    "spectral_contrastive": ["loss.name=spectral_contrastive"],
    # SimCLR's recipe on every nested prefix (loss.matryoshka_lengths null: 8, 16, ..., k), equal weights
    "matryoshka": ["loss.name=matryoshka", "loss.temperature=0.1"],
    "random_init": ["loss.name=neuralef", "loss.alpha=0.01"],
}
FRACTIONS = (1, 2, 4, 8, 16, 32, 64)  # code length k / f


def _default_data() -> Path:
    base = Path(os.environ.get("EIGENMAP_SHARED_DATA", ROOT.parent / "shared" / "data"))
    return base / "imagenette2-96"


def prepare_data(data: Path, out: Path, resolution: int) -> tuple[Path, Path]:
    """train/ and val/ (or valid/, validation/, test/) of the ImageFolder as .beton files
    (written once), stored no larger than training at ``resolution`` px can use."""
    from eigenmap.data import SourceError, manifest_path, read_manifest, stored_side_for, write_beton
    from eigenmap.data.sources import split_folders

    try:
        folders = split_folders(data)
    except SourceError as e:
        raise SystemExit(f"--data: {e}") from None
    if None in folders:
        raise SystemExit(f"--data '{data}' has no train/ and validation folder; expected an ImageFolder with train/ "
                         "and val/ (or valid/, validation/, test/), each holding class folders")
    paths = []
    for split, folder in zip(("train", "val"), folders):
        beton = out / "data" / f"{split}.beton"
        made_from = read_manifest(beton)["source"] if manifest_path(beton).is_file() else None
        if made_from is not None and Path(made_from).resolve() != folder.resolve():  # its runs trained on those
            raise SystemExit(f"--out '{out}' holds data made from '{made_from}', not '{folder}'; pass another --out")
        if not (beton.is_file() and made_from):
            write_beton(folder, beton, workers=os.cpu_count() or 1, overwrite=True,
                        max_resolution=stored_side_for(resolution))
        paths.append(beton)
    return paths[0], paths[1]


CONFIG = ROOT / "configs" / "imagenette_resnet18.yaml"


def method_settings(method: str, extra: list[str]) -> list[str]:
    """One method's own overrides on top of the shared recipe: its METHODS entry, then ``--set``
    (later keys win, so this is what the run trained with and what the results page names)."""
    return [*METHODS[method], *extra]


def _overrides(method: str, run_dir: Path, train_beton: Path, epochs: int, extra: list[str]) -> list[str]:
    """The overrides of CONFIG one method trains with in this comparison (the online classifier
    sized to the dataset's classes, which --set may still override)."""
    from eigenmap.data import read_manifest

    classes = len(read_manifest(train_beton)["classes"])
    return [*RECIPE, f"model.num_classes={classes}", *method_settings(method, extra), f"train.epochs={epochs}",
            f"data.train_path={train_beton}", f"train.run_dir={run_dir}"]


def _config(method: str, run_dir: Path, train_beton: Path, epochs: int, extra: list[str]):
    """The resolved config one method trains with in this comparison."""
    from eigenmap.train.checks import load_train_config

    return load_train_config(CONFIG, _overrides(method, run_dir, train_beton, epochs, extra))


def _check_reuse(method: str, run_dir: Path, cfg) -> None:
    """A finished run is reused only when it was trained with the settings asked for now: a
    changed recipe, loss setting or --set must not be reported under the old run's figures."""
    import yaml

    from eigenmap.config import to_dict
    from eigenmap.train.resume import meaning_changes

    changes = meaning_changes(yaml.safe_load(RunDir(run_dir).config.read_text()), to_dict(cfg))
    if changes:
        listing = "\n".join(f"  {c.key}: {c.old!r} -> {c.new!r}" for c in changes)
        raise SystemExit(f"[{method}] {run_dir} holds a finished run trained with other settings (finished run -> "
                         f"asked for now):\n{listing}\nPass another --out for this comparison, or ask for the run's "
                         "own settings to reuse it")


def train(method: str, run_dir: Path, train_beton: Path, epochs: int, extra: list[str]) -> None:
    """Train (or resume) one method as a plain worker process (nothing to do for a finished run
    of the same settings; a finished run of other settings is an error)."""
    status = RunDir(run_dir).read_status()
    if status and status.get("status") == "finished" and RunDir(run_dir).model.is_file():
        _check_reuse(method, run_dir, _config(method, run_dir, train_beton, epochs, extra))
        return
    cmd = [sys.executable, "-m", "eigenmap.train.worker", str(CONFIG),
           *_overrides(method, run_dir, train_beton, epochs, extra), f"dist.cpus_per_worker={os.cpu_count() or 1}"]
    print(f"[{method}] training: {' '.join(cmd[2:])}", flush=True)
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")})
    if done.returncode != 0:
        raise SystemExit(f"[{method}] training failed (exit {done.returncode}); rerun the same command to resume")


def random_init(run_dir: Path, train_beton: Path, epochs: int, extra: list[str]) -> None:
    """A run directory holding the untrained model: config, model.pt, a finished status."""
    import torch

    from eigenmap.config import save_config
    from eigenmap.models import build_model

    cfg = _config("random_init", run_dir, train_beton, epochs, extra)
    if RunDir(run_dir).model.is_file():
        _check_reuse("random_init", run_dir, cfg)
        return
    torch.manual_seed(cfg.train.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, RunDir(run_dir).config)
    export_weights(build_model(cfg), run_dir)
    RunDir(run_dir).status.write_text(json.dumps({"status": "finished", "step": 0, "untrained": True}))


def evaluate(run_dir: Path, train_beton: Path, val_beton: Path) -> dict:
    """Probe, kNN, retrieval at each length, eigenvalue ordering of one run (cached in its eval/):
    the same evaluation path as `eigenmap probe` and `eigenmap retrieve`."""
    import torch

    import retrieval
    from eigenmap.eval.features import extract_features
    from eigenmap.eval.inputs import check_pair, describe, load_arrays
    from eigenmap.eval.probe_knn import probe_and_knn
    from eigenmap.eval.spectrum import eigenvalue_order

    cached = RunDir(run_dir).eval / "quality.json"
    run = load_run(run_dir)
    if cached.is_file():
        figures = json.loads(cached.read_text())
        if figures.get("weights_mtime") == run.weights.stat().st_mtime:
            return figures
    started = time.perf_counter()
    sets = describe(train_beton, "train"), describe(val_beton, "val")
    classes = check_pair(*sets, "the probe, kNN and retrieval would score images against themselves")

    def extract(data: Path, folder: Path):
        return extract_features(run.model, run.config, data, folder, weights=run.weights, step=run.step,
                                progress=False)

    train_set, val_set = (load_arrays(inp, run_dir=run_dir, weights=run.weights, resolution=run.config.data.resolution,
                                      extract=extract) for inp in sets)
    classification = probe_and_knn(train_set, val_set, run.config.eval, num_classes=classes, ks=(20, 200),
                                   seed=run.config.train.seed, device=torch.device("cpu"))
    probe, knn = classification["linear_probe"], classification["knn"]["top1"]["features"]
    k = train_set.codes.shape[1]
    dims = sorted({k // f for f in FRACTIONS if k % f == 0})
    report = retrieval.run_benchmark(train_set.codes, train_set.labels, val_set.codes, val_set.labels, dims=dims,
                                     R=100, search=retrieval.SearchSettings(index="flat", backend="faiss-cpu"),
                                     baselines=retrieval.BaselineSettings(dims="all", query_sample=None), funnel=None,
                                     timing=retrieval.TimingSettings(repeats=1), seed=run.config.train.seed,
                                     name="codes")
    retrieval.write_report(report, RunDir(run_dir).retrieval("codes", pair_name(*(inp.name for inp in sets))))
    stats = run.model.statistics()
    trained = run.step not in (None, 0)
    order = eigenvalue_order(stats.eigenvalues.numpy()) if stats is not None and trained else None
    figures = {
        "weights_mtime": run.weights.stat().st_mtime, "step": run.step,
        "probe_top1": probe["top1"], "probe_top5": probe["top5"], "probe_best_top1": probe["best_top1"],
        "probe_best_epoch": probe["best_epoch"], "knn20_top1": knn["20"], "knn200_top1": knn["200"],
        "map_at_100": {str(rec["dim"]): rec["codes"]["map"] for rec in report["lengths"]},
        "random_subset_map": {str(rec["dim"]): rec["random_subset"]["map_mean"] for rec in report["lengths"]},
        "random_subset_map_std": {str(rec["dim"]): rec["random_subset"]["map_std"] for rec in report["lengths"]},
        "pca_map": {str(rec["dim"]): rec["pca"]["map"] for rec in report["lengths"]},
        "eigenvalue_spearman": order, "code_length": k,
        "eigenvalues_first8": stats.eigenvalues[:8].tolist() if stats is not None and trained else None,
        "eval_seconds": time.perf_counter() - started,
        "extraction_images_per_second": train_set.meta["images_per_second"],
        "retrieval_backend": report["search"]["backend"], "torch_threads": torch.get_num_threads(),
    }
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def _train_seconds(run_dir: Path) -> float:
    """Seconds spent in training steps: the sum over logged intervals of images / logged images/s.

    Read from the run's metrics.jsonl, so a run interrupted and resumed counts every step once
    and start-up, checkpoint writes of a killed attempt and evaluation are left out.
    """
    from eigenmap.config import load_config

    batch = load_config(RunDir(run_dir).config).derived.global_batch_size
    rows = RunDir(run_dir).read_metrics()
    total, previous = 0.0, 0
    for row in sorted(rows, key=lambda r: r["step"]):
        total += (row["step"] - previous) * batch / row["images_per_sec"]
        previous = row["step"]
    return total


def results_markdown(results: dict, command: str) -> str:
    """docs/results.md: the table, how to read it, the exact command."""
    methods = results["methods"]
    missing = [name for name in METHODS if name not in methods]
    k = next(iter(methods.values()))["code_length"]
    dims = [k // f for f in FRACTIONS if k % f == 0]
    lines = [
        "# Representation quality: NeuralEF against the baselines",
        "",
        f"`{Path(results['data']).name}` ({results['train_images']} training and {results['val_images']} validation images), "
        f"ResNet-18 at 64 px, k = {k} outputs, global batch 256, {results['epochs']} epochs, the same recipe for "
        "every method (`tools/bench_quality.py`: LARS, base lr 0.3 per 256, 2 warm-up epochs, cosine; the paper's "
        f"augmentations), trained on {results.get('machine', 'the CPU')}. Each method's own settings: "
        + "; ".join(f"{name} `{' '.join(m['overrides'])}`" for name, m in methods.items()) + ".",
        "",
        *([f"Methods not run in this comparison: {', '.join(missing)}.", ""] if missing else []),
        "Produced by:",
        "",
        "```bash",
        command,
        "```",
        "",
        "| method | probe top-1 | probe top-5 | kNN-20 top-1 | kNN-200 top-1 | mAP@100 full | "
        + " | ".join(f"mAP@100 1/{f}" for f in FRACTIONS[1:] if k % f == 0)
        + " | eigenvalue order (Spearman) | train time |",
        "|---|" + "---:|" * (6 + len(dims)),
    ]
    for name, m in methods.items():
        maps = " | ".join(f"{m['map_at_100'][str(d)]:.3f}" for d in dims)
        order = "n/a" if m["eigenvalue_spearman"] is None else f"{m['eigenvalue_spearman']:.3f}"
        minutes = f"{m['train_seconds'] / 60:.1f} min" if m["train_seconds"] else "untrained"
        lines.append(f"| {name} | {m['probe_top1']:.1f} | {m['probe_top5']:.1f} | {m['knn20_top1']:.1f} | "
                     f"{m['knn200_top1']:.1f} | {maps} | {order} | {minutes} |")
    lines += ["", "Short codes at each length: every method's prefix against a random subset of its own "
              "dimensions (mean of 5 seeded draws) and PCA of its own codes to the same length (mAP@100). "
              "The rank orders the methods' prefixes at that length (1: the best); prefix - PCA > 0 means "
              "cutting the code beats re-projecting it:", "",
              "| method | length | codes (prefix) | random subset | PCA | prefix - PCA | rank of the prefix |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for d in dims[1:]:
        prefix = {name: m["map_at_100"][str(d)] for name, m in methods.items()}
        ranked = sorted(prefix, key=prefix.get, reverse=True)
        for name, m in methods.items():
            lines.append(f"| {name} | {d} | {prefix[name]:.3f} | {m['random_subset_map'][str(d)]:.3f} | "
                         f"{m['pca_map'][str(d)]:.3f} | {prefix[name] - m['pca_map'][str(d)]:+.3f} | "
                         f"{ranked.index(name) + 1} of {len(ranked)} |")
    lines += ["", "How to read it: probe top-1/top-5 are after the final probe epoch on the validation set "
              "(features standardised with the training set's statistics, SGD, cosine, "
              f"{results['probe_epochs']} epochs); kNN is weighted (cosine, T = 0.07); mAP@100 uses the "
              "training set as database and the validation set as queries, a result being relevant when it "
              "shares the query's label, and a length-m code is the first m outputs, re-normalised. The "
              "eigenvalue order is Spearman's correlation between output index and the L2-BatchNorm eigenvalue "
              "estimate (-1: strictly decreasing). Per-method JSON: the `--json` file and "
              "`RUN/eval/quality.json`; per-length retrieval reports: `RUN/eval/retrieval/codes/train--val/`. Train time is "
              "the sum of the logged step times (images / images per second of each logging interval).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=_default_data(),
                   help="ImageFolder with train/ and val/ (or valid/, validation/, test/)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs of every method (default 15)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_quality", help="data, runs and figures")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for every method on top of the recipe (a changed benchmark: say so)")
    p.add_argument("--results-md", type=Path, default=None,
                   help="the markdown results page (default OUT/results.md; the project's docs/results.md is "
                        "written with --results-md docs/results.md)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    args.results_md = args.results_md or args.out / "results.md"
    if not args.data.is_dir():
        p.error(f"--data '{args.data}' does not exist; pass an ImageFolder with train/ and val/")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch

    from eigenmap.config import load_config
    from eigenmap.data import read_manifest
    from eigenmap.host_memory import keep_freed_memory

    torch.set_num_threads(os.cpu_count() or 1)
    keep_freed_memory()  # its evaluation (extraction, probe) runs in this process
    resolution = load_config(CONFIG, RECIPE + args.set).data.resolution
    train_beton, val_beton = prepare_data(args.data, args.out, resolution)
    out_runs = args.out / f"runs-{args.epochs}ep"
    results = {"data": str(args.data), "epochs": args.epochs, "recipe": RECIPE + args.set,
               "train_images": read_manifest(train_beton)["num_images"],
               "val_images": read_manifest(val_beton)["num_images"],
               "machine": f"{os.cpu_count()} CPU cores, "
               + (f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"),
               "methods": {}}
    for method in args.methods:
        run_dir = out_runs / method
        if method == "random_init":
            random_init(run_dir, train_beton, args.epochs, args.set)
            seconds = 0.0
        else:
            train(method, run_dir, train_beton, args.epochs, args.set)
            seconds = _train_seconds(run_dir)
        figures = evaluate(run_dir, train_beton, val_beton)
        results["methods"][method] = {"overrides": method_settings(method, args.set), "train_seconds": seconds,
                                      **figures}
        m = results["methods"][method]
        print(f"[{method}] probe top-1 {m['probe_top1']:.2f}, kNN-20 {m['knn20_top1']:.2f}, mAP@100 "
              f"{m['map_at_100'][str(m['code_length'])]:.3f} (1/16: {m['map_at_100'].get(str(m['code_length'] // 16))})",
              flush=True)
    results["probe_epochs"] = load_config(RunDir(out_runs / args.methods[0]).config).eval.probe_epochs
    command = "python tools/bench_quality.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    args.results_md.parent.mkdir(parents=True, exist_ok=True)  # a part of the comparison names what it left out
    args.results_md.write_text(results_markdown(results, command.strip()))
    print(f"written {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
