"""``eigenmap demo``: the main job end to end, on data every machine can install.

1. Data: Fashion-MNIST (Debian's ``dataset-fashion-mnist``, which ``make setup`` installs): its
   train and test sets become FFCV files. ``--data IMAGEFOLDER`` takes any ImageFolder tree
   instead: ``train/`` with ``val/`` (or ``valid/``, ``validation/``, ``test/``) when it has
   them, else ``train/`` alone or one folder of class folders, split by a seeded holdout
   (``--holdout``, a fraction of every class; the report states it).
2. Training: ``eigenmap train configs/demo.yaml`` on an embedded Ray cluster: two DeepSpeed
   workers on the CPU, or one per GPU found.
3. Evaluation: ``eigenmap probe`` (linear probe, kNN) and ``eigenmap retrieve`` (codes cut to
   1/2 ... of their length against random subsets and PCA, with queries/s).
4. The report: ``RUN/report/report.md`` with its plots (``eigenmap report RUN`` rewrites it).

Running it again reuses the data files (when made from the same files, holdout and seed), the
finished run and its finished probe and retrieval figures: a second run takes seconds and writes
the same report (its stage table keeps the seconds each stage took when it did the work;
``--fresh`` starts the run over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
DATA_KEY = "data_key.json"  # in OUT_DIR/data: what the data files there were made from
DEFAULT_STEPS = 500  # configs/demo.yaml says why (measured)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the main job end to end: data, training, probe, retrieval, report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="an ImageFolder tree (train/ with val/, valid/, validation/ or test/; or train/ alone or "
                        "one folder of class folders, to split); default: Fashion-MNIST "
                        f"from {FASHION_MNIST}")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="validation fraction of each class when --data has no validation folder (default 0.2)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/demo"),
                   help="data, run and report go here (default runs/demo)")
    p.add_argument("--max-steps", type=int, default=DEFAULT_STEPS,
                   help=f"training steps: the planned length, which warm-up and cosine span (default {DEFAULT_STEPS})")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run first (the data stays; default: "
                                                         "a finished run in --out-dir is reused)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help=f"more config overrides (optional) on top of {DEMO_CONFIG.relative_to(REPO)}, "
                        "e.g. train.seed=1")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="write the demo's figures here (default: none; the report is RUN/report/report.md)")
    p.set_defaults(func=run)


def _split_by_holdout(src: Path, dest: Path, fraction: float, seed: int) -> None:
    """Symlink trees ``dest/train`` and ``dest/val``: a seeded ``fraction`` of every class's image
    files (by extension) to val. Every other file is linked into train: ``eigenmap prepare`` is the
    one judge of what is an image, and it lists the files it skips in each ``.beton.json``; the
    extension only keeps notes and annotations beside the images out of the held-out count."""
    import numpy as np
    from PIL import Image

    if dest.exists():
        shutil.rmtree(dest)
    image_suffixes = set(Image.registered_extensions())
    classes = sorted(p for p in src.iterdir() if p.is_dir())
    for label, cls in enumerate(classes):
        for split in ("train", "val"):  # a class with no file on one side keeps its label there
            (dest / split / cls.name).mkdir(parents=True)
        files = sorted(p for p in cls.rglob("*") if p.is_file())
        images = [i for i, f in enumerate(files) if f.suffix.lower() in image_suffixes]
        rng = np.random.default_rng([seed, label])
        held = set(rng.choice(images, size=round(fraction * len(images)), replace=False).tolist())
        for i, f in enumerate(files):
            target = dest / ("val" if i in held else "train") / cls.name / f.relative_to(cls)
            target.parent.mkdir(parents=True, exist_ok=True)  # a class's subfolders
            target.symlink_to(f.resolve())


def _contents(root: Path) -> dict:
    """The number, total size and newest modification time of the files under ``root`` (links
    followed): a folder whose images were added, removed or replaced gives another answer."""
    count = size = newest = 0
    for dirpath, _, filenames in os.walk(root, followlinks=True):
        for name in filenames:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:  # a dangling link: prepare lists it as unreadable
                continue
            count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return {"files": count, "bytes": size, "newest_mtime_ns": newest}


def _data_key(args: argparse.Namespace, cfg) -> dict:
    """What the demo's data files are made from. Files made from anything else (another
    folder or other files in it, another holdout or seed, an earlier layout rule) are rebuilt,
    not reused.

    Raises:
        ValueError: ``--data`` has a validation folder but no training folder, or no class folders.
    """
    from eigenmap.data import stored_side_for
    from eigenmap.data.sources import split_folders

    longest = stored_side_for(cfg.data.resolution)
    if args.data is None:
        return {"data": str(FASHION_MNIST), "contents": _contents(FASHION_MNIST), "longest_side": longest}
    train, val = split_folders(args.data)
    held_out = val is None  # one folder (or train/ alone) split by the holdout
    if held_out and not any(p.is_dir() for p in (train or args.data).iterdir()):
        raise ValueError(f"--data '{train or args.data}' has no class folders; accepted: a folder of class folders "
                         "of images, or train/ with val/ (or valid/, validation/, test/), each holding class folders")
    return {"data": str(args.data.resolve()), "contents": _contents(args.data),
            "train": train and train.name, "val": val and val.name,
            "holdout": args.holdout if held_out else None, "seed": cfg.train.seed if held_out else None,
            "longest_side": longest}


def _betons(args: argparse.Namespace, data_dir: Path) -> tuple[Path, Path]:
    """The training and validation .beton files of the demo's data."""
    if args.data is None:
        return data_dir / "fashion-mnist-train.beton", data_dir / "fashion-mnist-test.beton"
    return data_dir / f"{args.data.name}-train.beton", data_dir / f"{args.data.name}-val.beton"


def _data_is_current(data_dir: Path, key: dict) -> bool:
    """Whether the data files in ``data_dir`` were made from ``key`` (:func:`_data_key`)."""
    key_file = data_dir / DATA_KEY
    return key_file.is_file() and json.loads(key_file.read_text()) == key


def _prepare_data(args: argparse.Namespace, eigenmap, cfg, key: dict | None = None,
                  current: bool | None = None) -> tuple[Path, Path, str, dict]:
    """The train and validation .beton files, a sentence saying where they came from, with the
    image counts the files hold (not the files the folders hold: some may not be images), and the
    training file's manifest. Files made earlier from the same data ``key`` are reused (``key``
    and ``current``, whether the files match it, are worked out when not given)."""
    from eigenmap.data import read_manifest

    data_dir, key = args.out_dir / "data", key or _data_key(args, cfg)
    reuse = _data_is_current(data_dir, key) if current is None else current
    seed, longest = cfg.train.seed, key["longest_side"]
    train_beton, val_beton = _betons(args, data_dir)
    if args.data is None:
        sources = [(FASHION_MNIST, "train", train_beton), (FASHION_MNIST, "t10k", val_beton)]
        statement = (f"Fashion-MNIST from {FASHION_MNIST} (Debian's dataset-fashion-mnist): its train set trains and "
                     "is the retrieval database; its test set is the probe's validation set and the retrieval queries.")
    elif key["val"] is not None:
        train, val = args.data / key["train"], args.data / key["val"]
        sources = [(train, "train", train_beton), (val, "train", val_beton)]
        statement = (f"ImageFolder {args.data}: {train.name}/ trains and is the database; {val.name}/ validates and "
                     "queries.")
    else:
        src = args.data / key["train"] if key["train"] else args.data
        split = data_dir / "split"
        _split_by_holdout(src, split, args.holdout, seed)
        sources = [(split / "train", "train", train_beton), (split / "val", "train", val_beton)]
        statement = (f"ImageFolder {src} split by a seeded holdout: {args.holdout:.0%} of every class's image files "
                     f"(seed {seed}) validate and query, the rest train and are the database.")
    key_file = data_dir / DATA_KEY
    for src, split_name, beton in sources:
        if not (reuse and beton.is_file()):
            key_file.unlink(missing_ok=True)  # until every file is rebuilt from this key
            rc = eigenmap(["prepare", str(src), str(beton), "--split", split_name, "--overwrite",
                           "--max-resolution", str(longest)])
            if rc:
                raise SystemExit(rc)
    key_file.write_text(json.dumps(key, indent=1) + "\n")
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
    from eigenmap.run import RunDir
    from launch.cli import main as eigenmap
    from retrieval import default_lengths

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
    try:
        key = _data_key(args, cfg)
    except ValueError as e:
        print(f"eigenmap demo: error: {e}", file=sys.stderr)
        return 2
    run_dir = args.out_dir / "run"
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    current = _data_is_current(args.out_dir / "data", key)
    if run_dir.exists() and not current:
        # the data files are about to be rebuilt from other images: the run would be evaluated on them
        print(f"eigenmap demo: error: '{run_dir}' holds a run whose data files were not made from this call's "
              f"--data (as its files are now), --holdout and seed ({args.out_dir / 'data' / DATA_KEY} records what "
              "they were made from); pass --fresh to train it again on this data, or another --out-dir",
              file=sys.stderr)
        return 2
    train_beton, val_beton, statement, manifest = _prepare_data(args, eigenmap, cfg, key, current)
    seconds["prepare data"] = time.perf_counter() - started

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
    lengths = default_lengths(cfg.model.projector_out_dim)  # retrieve's own default, stated here
    statement += (f" Retrieval scores the code lengths {', '.join(map(str, lengths))} (from 4, as the official Neural "
                  "Eigenmaps retrieval code does).")
    stages = [
        ("train", ["train", str(DEMO_CONFIG), f"data.train_path={train_beton}", f"train.run_dir={run_dir}",
                   f"train.max_steps={args.max_steps}", f"model.num_classes={classes}", *device_overrides,
                   *fitted, *args.overrides, "--json", str(args.out_dir / "train.json")]),
        ("linear probe and kNN", ["probe", str(run_dir), "--train", str(train_beton), "--val", str(val_beton)]),
        ("retrieval", ["retrieve", str(run_dir), "--database", str(train_beton), "--queries", str(val_beton),
                       "--R", str(retrieval_r)]),
    ]
    earlier, products = RunDir(run_dir).read_demo() or {}, _stage_products(run_dir, train_beton, val_beton)
    reused = ["prepare data"] if current else []
    for name, command in stages:
        t0 = time.perf_counter()
        before = _mtime(products[name])
        rc = eigenmap(command)
        seconds[name] = time.perf_counter() - t0
        if rc:
            print(f"eigenmap demo: the {name} stage failed (exit {rc}); rerun `eigenmap demo` to resume",
                  file=sys.stderr)
            return rc
        if before is not None and _mtime(products[name]) == before:
            reused.append(name)  # the stage kept its finished result
    # once each: demo.json holds the stages before the report (the report reads it), and the
    # report's own time goes to the console and --json only; a stage that reused its finished
    # result keeps the seconds it took when it did the work, so a rerun gives the same report
    shown = {name: earlier.get("stage_seconds", {}).get(name, s) if name in reused else s
             for name, s in seconds.items()}
    demo = {"data_statement": statement, "train": str(train_beton), "val": str(val_beton), "device": device,
            "stage_seconds": shown}
    RunDir(run_dir).demo.write_text(json.dumps(demo, indent=1) + "\n")
    t0 = time.perf_counter()
    rc = eigenmap(["report", str(run_dir)])
    seconds["report"] = time.perf_counter() - t0
    demo["stage_seconds"], demo["reused_stages"] = seconds, reused
    demo["total_seconds"] = time.perf_counter() - started
    demo["report"] = str((RunDir(run_dir).report / "report.md").resolve())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(demo, indent=1) + "\n")
    print("\n" + _findings_of(Path(demo["report"])))
    print(f"demo finished in {demo['total_seconds']:.0f} s; the report: {demo['report']}")
    return rc


def _stage_products(run_dir: Path, train_beton: Path, val_beton: Path) -> dict[str, Path]:
    """The file each stage writes when it does its work (left as it is when it reuses it)."""
    from eigenmap.run import RunDir, pair_name

    run = RunDir(run_dir)
    pair = pair_name(train_beton.name.removesuffix(".beton"), val_beton.name.removesuffix(".beton"))
    return {"train": run.status, "linear probe and kNN": run.probe(pair) / "probe.json",
            "retrieval": run.retrieval("codes", pair) / "retrieval.json"}


def _mtime(path: Path) -> Optional[int]:
    return path.stat().st_mtime_ns if path.is_file() else None


def _findings_of(report: Path) -> str:
    """The report's findings section (what the run shows, in words), for the console."""
    text = report.read_text() if report.is_file() else ""
    start = text.find("## Findings")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None].strip() + "\n"
