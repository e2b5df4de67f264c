"""``eigenmap probe RUN --train TRAIN.beton --val VAL.beton``: linear probe and kNN of a frozen encoder.

1. Both sets are checked first (paths, contents, class lists, label kinds): a wrong pair is
   refused before any extraction. ``--val`` must be held out from ``--train``: one set, or a
   byte copy of it, in both roles is refused.
2. The encoder features and codes of a ``.beton`` are extracted once (resize, centre crop,
   normalise) into ``RUN/eval/features/`` and reused while the weights and the file's contents
   are unchanged. A feature folder written by ``eigenmap extract``, or a folder of anyone's
   arrays (``features.npy`` and/or ``codes.npy`` with ``labels.npy``), is accepted in place of
   a ``.beton``; with two such folders RUN may be left out (the probe then uses the schema's
   ``eval.*`` defaults and ``--out``).
3. Linear probe: by default on the cached centre-crop features, standardised with the training
   set's statistics; SGD momentum 0.9, cosine schedule, weight decay, batch and epochs from the
   run's ``eval.*`` (or the flags). ``--augmented`` is the paper's protocol: every epoch draws new
   random-resized-crop + flip views of the training set through the frozen encoder (slow: the
   encoder runs every epoch). Top-1 and top-5 on the validation set after the FINAL epoch; the
   best epoch's top-1 is shown too, labelled as such. Multi-label sets are refused (the probe is
   a single-label classifier; `eigenmap retrieve` scores multi-label sets).
4. Weighted kNN (cosine, votes exp(sim / T), T = 0.07, k = 20 and 200 by default) top-1, on the
   encoder features and on the codes, reading the training set in blocks within ``--memory-budget``.

5. Leaks are caught by content: every --val image is matched to its nearest --train image by
   pixel signatures (``eigenmap.eval.overlap``); when 10% or more of --val are near-duplicates
   (the same images prepared again) the probe is refused unless ``--allow-overlap``. The overlap
   (count, share, closest pairs by row) is recorded in probe.json either way.

Results go to ``RUN/eval/probe/<train>--<val>/probe.json`` (or ``--out``; a folder holding the
figures of other inputs is kept unless ``--overwrite``), and to ``--json``. A rerun with the same
inputs, weights (by content) and settings reuses that file's figures (``--recompute`` to redo).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from launch.arg_types import int_at_least, memory_size
from launch.eval_inputs import INTERRUPTED, add_extraction_arguments, extractor, pick_device

CONSEQUENCE = "the probe and kNN would be scored on the images they were fitted to (kNN finds each image itself)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("probe", help="linear probe and kNN of a trained encoder",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, nargs="?", default=None, metavar="RUN",
                   help="a finished run directory (train.run_dir); needed when a set is a .beton")
    p.add_argument("--train", type=Path, required=True, help="training set: .beton, feature folder or arrays folder")
    p.add_argument("--val", type=Path, required=True, help="validation set: .beton, feature folder or arrays folder")
    p.add_argument("--augmented", action="store_true",
                   help="the paper's protocol: new random-resized-crop + flip views each epoch (needs a .beton)")
    p.add_argument("--epochs", type=int_at_least("--epochs", 1), default=None,
                   help="probe epochs (default: the run's eval.probe_epochs)")
    p.add_argument("--lr", type=float, default=None, help="probe SGD lr (default: eval.probe_lr)")
    p.add_argument("--knn-k", type=int_at_least("--knn-k", 1), nargs="+", default=None, metavar="K",
                   help="kNN k's (default: eval.knn_ks)")
    p.add_argument("--knn-only", action="store_true", help="kNN alone, no linear probe")
    p.add_argument("--memory-budget", type=memory_size("--memory-budget"), default=None, metavar="SIZE",
                   help="bytes kNN holds for one block of training rows and its scores, e.g. 1GiB (the default)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default RUN/eval/probe/<train>--<val>)")
    p.add_argument("--overwrite", action="store_true", help="replace a report of other inputs in the folder")
    p.add_argument("--recompute", action="store_true",
                   help="compute again although the folder holds the figures of these inputs, weights and settings "
                        "(default: they are reused)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="go on although --val is largely made of near-duplicates of --train images (a leaked "
                        "validation set; the overlap is recorded in probe.json either way)")
    add_extraction_arguments(p)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eigenmap.config import EvalConfig
    from eigenmap.eval.inputs import EvalInputError, check_pair, describe, load_arrays, require_arrays
    from eigenmap.eval.probe_knn import augmented_batches, probe_and_knn
    from eigenmap.eval.reports import check_report_folder, finished_report, publish_report
    from eigenmap.run import RunDir, RunDirError, load_run, pair_name

    try:
        device = pick_device(args.device)
        # every path, the run and the pair are checked before anything is extracted
        sets = describe(args.train, "--train"), describe(args.val, "--val")
        loaded = load_run(args.run, device=device) if args.run is not None else None
        classes = check_pair(*sets, CONSEQUENCE)
        warnings = _pair_warnings(*sets)
        for warning in warnings:
            print(f"eigenmap probe: warning: {warning}", file=sys.stderr)
        for inp in sets:
            if not args.knn_only:  # kNN runs on whichever of features and codes a folder holds
                require_arrays(inp, "features")
            if inp.label_kind == "multi":
                raise EvalInputError(f"{inp.role} '{inp.path}' is a multi-label set ({inp.num_labels} flags per image); "
                                     "the probe and kNN classify one label per image: accepted here are "
                                     "single-label sets (`eigenmap retrieve` scores multi-label sets)")
        if args.augmented and sets[0].kind != "beton":
            raise EvalInputError(f"--augmented draws new views from the images: --train must be a .beton, got "
                                 f"'{args.train}'")
        needs_run = any(inp.kind == "beton" for inp in sets)
        if args.run is None and (needs_run or args.out is None):
            raise EvalInputError("pass RUN (the encoder that reads a .beton; the figures go to RUN/eval/probe/) "
                                 "or, with two array folders, --out DIR")
        inputs = {"train": sets[0].to_dict(), "val": sets[1].to_dict()}
        folder = args.out or RunDir(args.run).probe(pair_name(sets[0].name, sets[1].name))
        check_report_folder(folder, "probe.json", inputs, overwrite=args.overwrite, out_flag="--out")
        settings = loaded.config.eval if loaded is not None else EvalConfig()
        request = _request(args, loaded, settings, device)
        done = None if args.recompute else finished_report(folder, "probe.json", inputs, request)
        if done is not None:
            return _reused(done, folder, args)
        arrays = _load(sets, loaded, args, device, load_arrays)
        overlap = _check_overlap(arrays, args.allow_overlap)
        batches = (augmented_batches(loaded.model, loaded.config, args.train, settings.probe_batch_size, device)
                   if args.augmented else None)
        figures = probe_and_knn(*arrays, settings, num_classes=classes, device=device,
                                seed=loaded.config.train.seed if loaded is not None else 0, epochs=args.epochs,
                                lr=args.lr, ks=args.knn_k, train_batches=batches, knn_only=args.knn_only,
                                knn_memory_budget_bytes=args.memory_budget)
    except (RunDirError, ValueError) as e:
        print(f"eigenmap probe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eigenmap probe: interrupted; no figures were written (arrays extracted before the interrupt are "
              "kept and reused); run the same command again", file=sys.stderr)
        return INTERRUPTED
    figures = {"run": str(args.run.resolve()) if args.run else None, "step": loaded.step if loaded else None,
               "weights": str(loaded.weights) if loaded else None,
               "arch": loaded.config.model.arch if loaded else None, "loss": loaded.config.loss.name if loaded else None,
               "inputs": inputs, "request": request, "train": _describe(arrays[0], sets[0]),
               "val": _describe(arrays[1], sets[1]), "overlap": overlap, "device": str(device), "warnings": warnings,
               **figures}
    text = json.dumps(figures, indent=1) + "\n"
    publish_report(folder, lambda tmp: (tmp / "probe.json").write_text(text))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    _print(figures, folder / "probe.json")
    return 0


def _pair_warnings(train, val) -> list[str]:
    """What looks wrong with a pair that is still valid: a training set smaller than the validation
    set is most often the two swapped (the probe then learns from the held-out images)."""
    if train.num_images < val.num_images:
        return [f"the training set --train '{train.path}' ({train.num_images:,} images) is smaller than the "
                f"validation set --val '{val.path}' ({val.num_images:,}): were the two swapped? The probe trains on "
                "--train and reports accuracy on --val"]
    return []


def _request(args: argparse.Namespace, loaded, settings, device) -> dict:
    """What the figures depend on besides the inputs: the weights (by content) and the settings."""
    from eigenmap.config import to_dict
    from eigenmap.durable import sha256_of

    return {"weights_sha256": sha256_of(loaded.weights) if loaded is not None else None,
            "seed": loaded.config.train.seed if loaded is not None else 0, "eval": to_dict(settings),
            "epochs": args.epochs, "lr": args.lr, "knn_k": args.knn_k, "knn_only": args.knn_only,
            "augmented": args.augmented, "scale_by_eigenvalue": args.scale_by_eigenvalue, "device": str(device),
            "allow_overlap": args.allow_overlap}


def _reused(figures: dict, folder: Path, args: argparse.Namespace) -> int:
    """A finished probe of the same inputs, weights and settings: its figures, not computed again."""
    print(f"eigenmap probe: {folder / 'probe.json'} holds the figures of these inputs, weights and settings: "
          "reused (--recompute computes them again)", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    _print(figures, folder / "probe.json")
    return 0


def _check_overlap(arrays, allowed: bool) -> dict:
    """Near-duplicates of --train images among --val's: a leak (a large share) is refused unless
    ``allowed``; any overlap is said on the console and recorded."""
    from eigenmap.eval.inputs import EvalInputError
    from eigenmap.eval.overlap import LEAK_SHARE, overlap_sentence, set_overlap

    found = set_overlap(*arrays)
    said = overlap_sentence(found, "--train", "--val")
    if found["leak"] and not allowed:
        raise EvalInputError(f"{said}. A validation set leaked into the training set (the same images prepared "
                             f"again?) inflates every figure: {LEAK_SHARE:.0%} or more of --val is refused; accepted: "
                             "a --val held out from --train, or --allow-overlap to score it anyway")
    if found["count"]:
        print(f"eigenmap probe: warning: {said}", file=sys.stderr)
    return found


def _load(sets, loaded, args: argparse.Namespace, device, load_arrays) -> tuple:
    """Both sets' arrays (a .beton's extracted through the run, once)."""
    extract = extractor(args, loaded, args.run, device) if loaded is not None else None
    return tuple(load_arrays(inp, run_dir=args.run, weights=loaded and loaded.weights,
                             scale_by_eigenvalue=args.scale_by_eigenvalue,
                             resolution=loaded and loaded.config.data.resolution, extract=extract) for inp in sets)


def _describe(arrays, inp) -> dict:
    shapes = arrays.meta["shapes"]
    return {"dataset": arrays.meta["dataset"]["path"], "id": inp.identity, "num_images": inp.num_images,
            "features": shapes.get("features"), "codes": shapes.get("codes"), "folder": str(arrays.folder)}


def _print(f: dict, out: Path) -> None:
    from launch.report import knn_capped_note

    p = f["linear_probe"]
    if p is not None:
        print(f"linear probe ({p['protocol']}, {p['epochs']} epochs): top-1 {p['top1']:.2f}  top-5 {p['top5']:.2f}  "
              f"(best epoch {p['best_epoch']}: top-1 {p['best_top1']:.2f}, for reference)")
    for name, accs in f["knn"]["top1"].items():
        print(f"kNN on {name}: " + "  ".join(f"k={k} top-1 {v:.2f}" for k, v in accs.items()))
    if capped := knn_capped_note(f["knn"], f["train"]["num_images"]):
        print(capped)
    print(f"chance level (1 / {f['num_classes']} classes): {100 / f['num_classes']:.2f}")
    print(f"written to {out}")
