"""``eigenmap demo``: the main job end to end, on data every machine can install.

1. Data: Fashion-MNIST (Debian's ``dataset-fashion-mnist``, which ``make setup`` installs): its
   train and test sets become FFCV files. ``--data IMAGEFOLDER`` takes any ImageFolder tree
   instead: ``train/`` and ``val/`` when it has them, else one folder split by a seeded holdout
   (``--holdout``, a fraction of every class; the report states it).
2. Training: ``eigenmap train configs/demo.yaml`` on an embedded Ray cluster: two DeepSpeed
   workers on the CPU, or one per GPU found.
3. Evaluation: ``eigenmap probe`` (linear probe, kNN) and ``eigenmap retrieve`` (codes cut to
   1/2 ... of their length against random subsets and PCA, with queries/s).
4. The report: ``RUN/report/report.md`` with its plots (``eigenmap report RUN`` rewrites it).

Running it again reuses the data files and the finished run (``--fresh`` starts the run over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEMO_CONFIG = REPO / "configs" / "demo.yaml"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the main job end to end: data, training, probe, retrieval, report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="an ImageFolder tree (train/ and val/, or one folder to split); default: Fashion-MNIST "
                        f"from {FASHION_MNIST}")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="validation fraction of each class when --data has no train/ and val/ (default 0.2)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/demo"), help="data, run and report go here")
    p.add_argument("--max-steps", type=int, default=150, help="training steps (default 150)")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run first (the data stays)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="more config overrides")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the demo's figures here")
    p.set_defaults(func=run)


def _split_by_holdout(src: Path, dest: Path, fraction: float, seed: int) -> None:
    """Symlink trees ``dest/train`` and ``dest/val``: a seeded ``fraction`` of every class's files
    to val. Every file is linked, images or not: ``eigenmap prepare`` is the one judge of what is
    an image, and it lists the files it skips in each ``.beton.json``."""
    import numpy as np

    if dest.exists():
        shutil.rmtree(dest)
    classes = sorted(p for p in src.iterdir() if p.is_dir())
    for label, cls in enumerate(classes):
        for split in ("train", "val"):  # a class with no file on one side keeps its label there
            (dest / split / cls.name).mkdir(parents=True)
        files = sorted(p for p in cls.rglob("*") if p.is_file())
        rng = np.random.default_rng([seed, label])
        held = set(rng.choice(len(files), size=round(fraction * len(files)), replace=False).tolist())
        for i, f in enumerate(files):
            target = dest / ("val" if i in held else "train") / cls.name / f.relative_to(cls)
            target.parent.mkdir(parents=True, exist_ok=True)  # a class's subfolders
            target.symlink_to(f.resolve())


def _prepare_data(args: argparse.Namespace, eigenmap, cfg) -> tuple[Path, Path, str, dict]:
    """The train and validation .beton files, a sentence saying where they came from, with the
    image counts the files hold (not the files the folders hold: some may not be images), and the
    training file's manifest."""
    from eigenmap.data import read_manifest, stored_side_for

    seed, longest = cfg.train.seed, stored_side_for(cfg.data.resolution)
    data_dir = args.out_dir / "data"
    if args.data is None:
        sources = [(FASHION_MNIST, "train", data_dir / "fashion-mnist-train.beton"),
                   (FASHION_MNIST, "t10k", data_dir / "fashion-mnist-test.beton")]
        statement = (f"Fashion-MNIST from {FASHION_MNIST} (Debian's dataset-fashion-mnist): its train set trains and "
                     "is the retrieval database; its test set is the probe's validation set and the retrieval queries.")
    elif (args.data / "train").is_dir() and (args.data / "val").is_dir():
        sources = [(args.data / s, "train", data_dir / f"{args.data.name}-{s}.beton") for s in ("train", "val")]
        statement = f"ImageFolder {args.data}: train/ trains and is the database; val/ validates and queries."
    else:
        split = data_dir / "split"
        _split_by_holdout(args.data, split, args.holdout, seed)
        sources = [(split / s, "train", data_dir / f"{args.data.name}-{s}.beton") for s in ("train", "val")]
        statement = (f"ImageFolder {args.data} split by a seeded holdout: {args.holdout:.0%} of every class's files "
                     f"(seed {seed}) validate and query, the rest train and are the database.")
    for src, split_name, beton in sources:
        if not beton.is_file():
            rc = eigenmap(["prepare", str(src), str(beton), "--split", split_name, "--overwrite",
                           "--max-resolution", str(longest)])
            if rc:
                raise SystemExit(rc)
    train, val = (read_manifest(beton) for _, _, beton in sources)
    statement += (f" Training set: {train['num_images']:,} images; validation set: {val['num_images']:,}; stored at "
                  f"most {longest} px on the longer side (training crops {cfg.data.resolution} px).")
    skipped = len(train["skipped"]) + len(val["skipped"])
    if skipped:
        statement += (f" {skipped} files were not usable images and were skipped (listed, with the reason, in each "
                      ".beton.json).")
    return sources[0][2], sources[1][2], statement, train


def _fitted_batch(n_images: int, cfg) -> list[str]:
    """An override lowering ``data.batch_size_per_worker`` so that one step's global batch fits
    the training set (a small folder), or nothing when it already fits or cannot (fewer images
    than workers: the loader then names the problem)."""
    workers, batch = cfg.dist.num_workers, cfg.data.batch_size_per_worker
    if n_images >= workers * batch or n_images < workers:
        return []
    return [f"data.batch_size_per_worker={n_images // workers}"]


def _device_overrides() -> tuple[list[str], str]:
    """One worker per GPU when there are GPUs; else the demo config's two CPU workers."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus == 0:
        return [], f"cpu ({os.cpu_count()} cores)"
    cpus = max(1, (os.cpu_count() or 1) // gpus)
    return ([f"dist.num_workers={gpus}", "dist.gpus_per_worker=1", f"dist.cpus_per_worker={cpus}"],
            f"{gpus} x {torch.cuda.get_device_name(0)}")


def run(args: argparse.Namespace) -> int:
    from eigenmap.config import load_config
    from launch.cli import main as eigenmap

    if args.data is None and not FASHION_MNIST.is_dir():
        print(f"eigenmap demo: error: '{FASHION_MNIST}' does not exist; install Debian's dataset-fashion-mnist "
              "(`make setup` does) or pass --data with an ImageFolder tree", file=sys.stderr)
        return 2
    if args.data is not None and not args.data.is_dir():
        print(f"eigenmap demo: error: --data '{args.data}' is not a folder; pass an ImageFolder tree", file=sys.stderr)
        return 2
    if not 0.0 < args.holdout < 1.0:
        print(f"eigenmap demo: error: --holdout {args.holdout}; accepted: a fraction in (0, 1)", file=sys.stderr)
        return 2
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    device_overrides, device = _device_overrides()
    cfg = load_config(DEMO_CONFIG, [*device_overrides, *args.overrides])
    train_beton, val_beton, statement, manifest = _prepare_data(args, eigenmap, cfg)
    seconds["prepare data"] = time.perf_counter() - started

    run_dir = args.out_dir / "run"
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    classes, n_train = len(manifest["classes"]), manifest["num_images"]
    # a small folder: its batch and mAP cut-off shrink to fit it (given before the user's overrides, which win)
    fitted = _fitted_batch(n_train, cfg)
    if fitted:
        batch = load_config(DEMO_CONFIG, [*device_overrides, *fitted, *args.overrides]).data.batch_size_per_worker
        statement += (f" The training batch is lowered to {batch} per worker so that a step fits the {n_train} "
                      "training images.")
    retrieval_r = min(100, n_train)
    if retrieval_r < 100:
        statement += f" Retrieval ranks the whole database: mAP@{retrieval_r}, not mAP@100."
    stages = [
        ("train", ["train", str(DEMO_CONFIG), f"data.train_path={train_beton}", f"train.run_dir={run_dir}",
                   f"train.max_steps={args.max_steps}", f"model.num_classes={classes}", *device_overrides,
                   *fitted, *args.overrides, "--json", str(args.out_dir / "train.json")]),
        ("linear probe and kNN", ["probe", str(run_dir), "--train", str(train_beton), "--val", str(val_beton)]),
        ("retrieval", ["retrieve", str(run_dir), "--database", str(train_beton), "--queries", str(val_beton),
                       "--R", str(retrieval_r)]),
    ]
    for name, command in stages:
        t0 = time.perf_counter()
        rc = eigenmap(command)
        seconds[name] = time.perf_counter() - t0
        if rc:
            print(f"eigenmap demo: the {name} stage failed (exit {rc}); rerun `eigenmap demo` to resume",
                  file=sys.stderr)
            return rc
    demo = {"data_statement": statement, "train": str(train_beton), "val": str(val_beton), "device": device,
            "stage_seconds": seconds}
    (run_dir / "demo.json").write_text(json.dumps(demo, indent=1) + "\n")
    t0 = time.perf_counter()
    rc = eigenmap(["report", str(run_dir)])
    seconds["report"] = time.perf_counter() - t0
    demo["stage_seconds"] = seconds
    (run_dir / "demo.json").write_text(json.dumps(demo, indent=1) + "\n")
    if rc == 0:  # again, quietly, so the report shows its own stage's time too
        from launch.report import write_run_report

        write_run_report(run_dir)
    demo["total_seconds"] = time.perf_counter() - started
    demo["report"] = str((run_dir / "report" / "report.md").resolve())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(demo, indent=1) + "\n")
    print(f"\ndemo finished in {demo['total_seconds']:.0f} s; the report: {demo['report']}")
    return rc
