"""``eigenmap prepare SRC OUT.beton``: write an FFCV dataset file and its manifest.

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
    if args.src is None or args.out is None:
        print("eigenmap prepare: error: SRC and OUT are required (or --verify OUT)", file=sys.stderr)
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
    print(f"wrote {manifest['num_images']} images of {len(manifest['classes'])} classes to {args.out} "
          f"in {seconds:.1f} s ({manifest['num_images'] / seconds:.0f} images/s); "
          f"manifest {manifest_path(args.out)}")
    if skipped:
        print(f"skipped {len(skipped)} files (all listed in the manifest), e.g.:")
        for item in skipped[:5]:
            print(f"  {item['path']}: {item['reason']}")
    if args.json is not None:
        figures = {
            "src": str(args.src), "out": str(args.out), "manifest": str(manifest_path(args.out)),
            "num_images": manifest["num_images"], "num_classes": len(manifest["classes"]),
            "num_skipped": len(skipped), "seconds": round(seconds, 3),
            "images_per_second": round(manifest["num_images"] / seconds, 1),
            "bytes": Path(args.out).stat().st_size, "workers": args.workers, "write_mode": args.write_mode,
            "max_resolution": args.max_resolution, "jpeg_quality": args.jpeg_quality,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0
