"""``eigenmap probe RUN --train TRAIN.beton --val VAL.beton``: linear probe and kNN of a frozen encoder.

1. The encoder features and codes of both sets are extracted once (resize, centre crop,
   normalise) into ``RUN/eval/features/`` and reused while the weights and files are unchanged;
   a feature folder written by ``eigenmap extract`` is accepted in place of a ``.beton``.
2. Linear probe: by default on the cached centre-crop features, standardised with the training
   set's statistics; SGD momentum 0.9, cosine schedule, weight decay, batch and epochs from the
   run's ``eval.*`` (or the flags). ``--augmented`` is the paper's protocol: every epoch draws new
   random-resized-crop + flip views of the training set through the frozen encoder (slow: the
   encoder runs every epoch). Top-1 and top-5 on the validation set after the FINAL epoch; the
   best epoch's top-1 is shown too, labelled as such.
3. Weighted kNN (cosine, votes exp(sim / T), T = 0.07, k = 20 and 200 by default) top-1, on the
   encoder features and on the codes.

Results go to ``RUN/eval/probe.json`` (and ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from launch.arg_types import int_at_least
from launch.eval_inputs import add_extraction_arguments, dataset_arrays, different_sets, pick_device, same_classes


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("probe", help="linear probe and kNN of a trained encoder",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, metavar="RUN", help="a finished run directory (train.run_dir)")
    p.add_argument("--train", type=Path, required=True, help="training set: .beton or feature folder")
    p.add_argument("--val", type=Path, required=True, help="validation set: .beton or feature folder")
    p.add_argument("--augmented", action="store_true",
                   help="the paper's protocol: new random-resized-crop + flip views each epoch (needs a .beton)")
    p.add_argument("--epochs", type=int_at_least("--epochs", 1), default=None,
                   help="probe epochs (default: the run's eval.probe_epochs)")
    p.add_argument("--lr", type=float, default=None, help="probe SGD lr (default: eval.probe_lr)")
    p.add_argument("--knn-k", type=int_at_least("--knn-k", 1), nargs="+", default=None, metavar="K",
                   help="kNN k's (default: eval.knn_ks)")
    add_extraction_arguments(p)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eigenmap.run_dir import RunDirError, load_run

    try:
        device = pick_device(args.device)
        loaded = load_run(args.run, device=device)
        if args.augmented and not args.train.is_file():
            raise ValueError(f"--augmented draws new views from the images: --train must be a .beton, got '{args.train}'")
        train = dataset_arrays(loaded, args.run, args.train, args, device)
        val = dataset_arrays(loaded, args.run, args.val, args, device)
        figures = evaluate(loaded, train, val, args, device)
    except (RunDirError, ValueError) as e:
        print(f"eigenmap probe: error: {e}", file=sys.stderr)
        return 2
    out = args.run / "eval" / "probe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    _print(figures, out)
    return 0


def evaluate(loaded, train, val, args: argparse.Namespace, device: torch.device) -> dict:
    """The probe and kNN figures of one run on (train, val) arrays."""
    from eigenmap.eval.knn import knn_top1
    from eigenmap.eval.linear_probe import Standardiser, train_probe

    ev = loaded.config.eval
    different_sets(train, val, ("--train", "--val"), "the probe and kNN would be scored on the images they were "
                   "fitted to (kNN finds each image itself)")
    classes = same_classes(train, val, ("--train", "--val"))
    epochs, lr = args.epochs or ev.probe_epochs, args.lr or ev.probe_lr
    started = time.perf_counter()
    standardiser = Standardiser.fit(train.features)
    batches = _augmented_batches(loaded, args.train, ev.probe_batch_size, device) if args.augmented else None
    probe = train_probe(train.features, train.labels, val.features, val.labels, num_classes=classes, epochs=epochs,
                        lr=lr, weight_decay=ev.probe_weight_decay, batch_size=ev.probe_batch_size,
                        seed=loaded.config.train.seed, device=device, train_batches=batches,
                        standardiser=standardiser)
    probe_seconds = time.perf_counter() - started
    ks = tuple(args.knn_k or ev.knn_ks)
    started = time.perf_counter()
    knn = {name: {str(k): v for k, v in knn_top1(getattr(train, name), train.labels, getattr(val, name), val.labels,
                                                  ks=ks, temperature=ev.knn_temperature, num_classes=classes,
                                                  device=device).items()}
           for name in ("features", "codes")}
    return {
        "run": str(args.run.resolve()), "step": loaded.step, "weights": str(loaded.weights),
        "arch": loaded.config.model.arch, "loss": loaded.config.loss.name,
        "train": _describe(train), "val": _describe(val), "num_classes": classes, "device": str(device),
        "linear_probe": {
            "protocol": ("augmented: RandomResizedCrop + flip views through the frozen encoder each epoch"
                         if args.augmented else "cached centre-crop features, standardised"),
            "epochs": epochs, "lr": lr, "weight_decay": ev.probe_weight_decay, "batch_size": ev.probe_batch_size,
            "momentum": 0.9, "schedule": "cosine to 0", **probe.to_dict(), "seconds": probe_seconds},
        "knn": {"temperature": ev.knn_temperature, "ks": list(ks), "top1": knn,
                "seconds": time.perf_counter() - started},
    }


def _describe(arrays) -> dict:
    meta = arrays.meta
    return {"dataset": meta["dataset"]["path"], "num_images": meta["shapes"]["labels"][0],
            "features": meta["shapes"]["features"], "codes": meta["shapes"]["codes"], "folder": str(arrays.folder)}


def _augmented_batches(loaded, beton: Path, batch_size: int, device: torch.device):
    """Each epoch: one random-resized crop + flip of every training image through the frozen
    encoder (view 1 of the training loader; no colour augmentation, as the probe protocol)."""
    import dataclasses

    from eigenmap.data import build_train_loader

    cfg = loaded.config
    data_cfg = dataclasses.replace(cfg.data, batch_size_per_worker=batch_size)
    loader = build_train_loader(data_cfg, beton, rank=0, world_size=1, seed=cfg.train.seed + 1, device=device)
    mean = torch.tensor(cfg.data.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg.data.std, device=device).view(1, 3, 1, 1) * 255

    def epoch(e: int):
        loader.set_epoch(e)
        for view1, _, labels in loader:
            x = ((view1.to(device).float() - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                feats = loaded.model.backbone(x).float()
            yield feats, labels.to(device)

    return epoch


def _print(f: dict, out: Path) -> None:
    from launch.report import knn_capped_note

    p = f["linear_probe"]
    print(f"linear probe ({p['protocol']}, {p['epochs']} epochs): top-1 {p['top1']:.2f}  top-5 {p['top5']:.2f}  "
          f"(best epoch {p['best_epoch']}: top-1 {p['best_top1']:.2f}, for reference)")
    for name, accs in f["knn"]["top1"].items():
        print(f"kNN on {name}: " + "  ".join(f"k={k} top-1 {v:.2f}" for k, v in accs.items()))
    if capped := knn_capped_note(f["knn"], f["train"]["num_images"]):
        print(capped)
    print(f"written to {out}")
