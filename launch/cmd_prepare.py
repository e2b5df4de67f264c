"""``eigenmap prepare SRC OUT.beton``: write an FFCV dataset file and its manifest.

``eigenmap prepare --list LIST OUT.beton [--root DIR]`` writes the images an image list file
names, with its labels (multi-hot 0/1 flags, or one class index a line).

``eigenmap prepare --verify OUT.beton`` checks a written file against its manifest (size,
image count, SHA-256 of every byte): exit 0 when it matches, 1 when it does not, 2 when it
cannot be checked (no such file, no manifest with a checksum).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from launch.arg_types import int_at_least

HELP = """\
Write SRC to the FFCV file OUT (and OUT.json, the manifest: classes with their labels, counts
per class, every skipped file with its reason).

SRC is an ImageFolder tree (SRC/<class>/<images>, the ImageNet layout; classes are the folder
names in sorted order) or Fashion-MNIST/MNIST IDX files: the folder Debian's
dataset-fashion-mnist installs (/usr/share/datasets/fashion-mnist, pick the split with
--split) or an *-images-idx3-ubyte[.gz] file.

--list LIST (instead of SRC) reads an image list file, the format of the DeepHash / HashNet
splits of COCO, NUS-WIDE, VOC2012 and MIRFlickr (*_DB.txt, *_Query.txt, *_Train.txt): one image
a line, its path (relative to --root, by default LIST's folder, or absolute) then C flags of
0/1 (multi-label: stored as multi-hot rows, the manifest says label_kind "multi" and
num_labels C), or one class index (single-label). Lines that do not fit (another flag count, a
flag other than 0/1, no label) and lines whose image is missing or unreadable are listed in the
manifest's "skipped" with their line numbers and reasons; the rest are written.

Bad files (empty, truncated or corrupt, not an image, unreadable) are skipped and listed;
grayscale, CMYK, palette, alpha and 16-bit images are converted to RGB. OUT is written
through a temporary file and never replaced unless --overwrite is given; with it, the old OUT
and its manifest stay valid until the new pair is complete, then both are replaced together.
The manifest records OUT's size and SHA-256: `eigenmap train` checks the size and image count
before starting, `eigenmap prepare --verify OUT` the checksum.

Tuning: --max-resolution 256..512 (longest side) keeps an ImageNet file small and its decode
fast; for small images (<= 96 px) --write-mode raw trades disk for no JPEG decode at all.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare", help="write an ImageFolder tree or IDX files to an FFCV .beton",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", nargs="?", help="ImageFolder root, or Fashion-MNIST IDX folder/file")
    parser.add_argument("out", metavar="OUT", nargs="?", help="the .beton to write (its manifest goes to OUT.json)")
    parser.add_argument("--verify", metavar="OUT", default=None,
                        help="instead of writing: check OUT against its manifest (size, image count, SHA-256)")
    parser.add_argument("--max-resolution", type=int_at_least("--max-resolution", 1), default=None, metavar="N",
                        help="shrink images whose longest side exceeds N px (default: keep sizes)")
    parser.add_argument("--jpeg-quality", type=int_at_least("--jpeg-quality", 1), default=90, metavar="Q",
                        help="JPEG quality 1-100 of the stored images (default: 90)")
    parser.add_argument("--workers", type=int_at_least("--workers", 1), default=os.cpu_count() or 1, metavar="N",
                        help="writer processes (default: all CPUs, %(default)s here)")
    parser.add_argument("--write-mode", choices=("jpg", "raw"), default="jpg",
                        help="store JPEG (compact) or raw pixels (no decode; for small images) (default: jpg)")
    parser.add_argument("--split", choices=("train", "t10k"), default="train",
                        help="IDX split when SRC is a folder of IDX files (default: train)")
    parser.add_argument("--list", type=Path, default=None, metavar="LIST",
                        help="instead of SRC: an image list file, 'PATH FLAG_1 ... FLAG_C' (multi-hot 0/1) or "
                             "'PATH LABEL' a line; then give only OUT")
    parser.add_argument("--root", type=Path, default=None, metavar="DIR",
                        help="with --list: where its relative paths start (default: the list file's folder)")
    parser.add_argument("--num-labels", type=int_at_least("--num-labels", 1), default=None, metavar="C",
                        help="with --list: C, the flag count (multi-hot) or class count (single-label) "
                             "(default: the flag count most lines carry, or the largest label + 1)")
    parser.add_argument("--class-names", type=Path, default=None, metavar="FILE",
                        help="with --list: a file of the C class names, one a line in flag order "
                             "(default: the indices 0..C-1, zero-padded)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write the figures (images, skipped, seconds) here as JSON")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.verify is not None:
        if args.src is not None:
            print(f"eigenmap prepare: error: --verify takes only the file to check, got also {args.src!r}",
                  file=sys.stderr)
            return 2
        return verify(args.verify)
    list_only = [name for name, value in (("--root", args.root), ("--num-labels", args.num_labels),
                                          ("--class-names", args.class_names)) if value is not None]
    if args.list is not None:
        if args.out is not None or args.src is None:
            got = f"got {', '.join(repr(a) for a in (args.src, args.out) if a is not None) or 'none'}"
            print(f"eigenmap prepare: error: --list LIST takes one more argument, OUT ({got})", file=sys.stderr)
            return 2
        args.out = args.src
        from eigenmap.data.sources import ListSpec

        args.src = ListSpec(args.list, root=args.root, num_labels=args.num_labels, class_names=args.class_names)
    elif list_only:
        print(f"eigenmap prepare: error: {', '.join(list_only)} {'is' if len(list_only) == 1 else 'are'} only for "
              "--list LIST (an image list file)", file=sys.stderr)
        return 2
    if args.src is None or args.out is None:
        print("eigenmap prepare: error: SRC and OUT are required (or --list LIST OUT, or --verify OUT)",
              file=sys.stderr)
        return 2
    return write(args)


def verify(path: str) -> int:
    """``--verify``: 0 the file matches its manifest, 1 it does not, 2 it cannot be checked."""
    from eigenmap.data.beton_check import beton_problems
    from eigenmap.data.manifest import ManifestError

    if not Path(path).is_file():
        print(f"eigenmap prepare: error: '{path}' does not exist (pass a .beton written by `eigenmap prepare`)",
              file=sys.stderr)
        return 2
    try:
        problems = beton_problems(path, checksum=True)
    except ManifestError as e:
        print(f"eigenmap prepare: error: {e}", file=sys.stderr)
        return 2
    if problems:
        for problem in problems:
            print(f"eigenmap prepare: verify failed: {problem}", file=sys.stderr)
        return 1
    print(f"{path}: OK (size, image count and SHA-256 match its manifest)")
    return 0


def write(args: argparse.Namespace) -> int:
    from eigenmap.data import SourceError, WriterError, write_beton
    from eigenmap.data.manifest import manifest_path

    t0 = time.perf_counter()
    try:
        manifest = write_beton(
            args.src, args.out, max_resolution=args.max_resolution, jpeg_quality=args.jpeg_quality,
            workers=args.workers, write_mode=args.write_mode, overwrite=args.overwrite, split=args.split,
        )
    except (SourceError, WriterError) as e:
        print(f"eigenmap prepare: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eigenmap prepare: interrupted; '{args.out}' was not written", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - t0
    skipped = manifest["skipped"]
    labels = f"{manifest['num_labels']} classes" + (" (multi-label)" if manifest["label_kind"] == "multi" else "")
    print(f"wrote {manifest['num_images']} images of {labels} to {args.out} "
          f"in {seconds:.1f} s ({manifest['num_images'] / seconds:.0f} images/s); "
          f"manifest {manifest_path(args.out)}")
    if skipped:
        print(f"skipped {len(skipped)} {'lines' if args.list else 'files'} (all listed in the manifest), e.g.:")
        for item in skipped[:5]:
            where = f"line {item['line']}: " if item.get("line") is not None else ""
            print(f"  {where}{item['path']}: {item['reason']}")
    if args.json is not None:
        figures = {
            "src": str(args.src), "out": str(args.out), "manifest": str(manifest_path(args.out)),
            "num_images": manifest["num_images"], "num_classes": len(manifest["classes"]),
            "label_kind": manifest["label_kind"],
            "num_skipped": len(skipped), "seconds": round(seconds, 3),
            "images_per_second": round(manifest["num_images"] / seconds, 1),
            "bytes": Path(args.out).stat().st_size, "workers": args.workers, "write_mode": args.write_mode,
            "max_resolution": args.max_resolution, "jpeg_quality": args.jpeg_quality,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0
