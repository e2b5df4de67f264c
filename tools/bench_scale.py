#!/usr/bin/env python
"""ImageNet-shaped work, this package against the plain library calls it wraps, in one run.

Writes seeded, structured arrays as memory maps under ``--workdir``: ``--rows`` x ``--dim``
float32 database rows and ``--queries`` queries of ``--classes`` classes (row i of class y is
``s * (a * mu_y + noise)``: Gaussian class centres mu, a per-dimension scale ``s_j = (1 +
j)^-1/2`` like the square root of an eigenvalue spectrum, and a class signal ``a_j`` that sits
mostly in the leading 1/16 of the dimensions, as in ``tools/bench_retrieval.py``), and, with
``--images M``, a tree of M small JPEGs in ``--classes`` class folders: random crops of the
Imagenette images in ``$EIGENMAP_SHARED_DATA/imagenette2-96`` (default ``../shared/data``
beside the checkout), resized to 48-96 px and saved at JPEG quality 90, or seeded synthetic
pictures when that folder is absent (the JSON and the table say which). Then, per stage, both
sides run one after the other (the order alternates between rounds), each in its own process:

- ``retrieve``: ``eigenmap retrieve``'s exact search at 128 dims (``retrieval``'s flat index
  over the prefix view of the memory map, queries prefixed and normalised) against FAISS
  ``IndexFlatIP`` over the same memory map (chunks read, normalised, added); R = 100.
- ``knn``: ``eigenmap probe``'s weighted kNN (``eigenmap.eval.knn``, k = 20 and 200, T = 0.07,
  its default 1 GiB budget) against FAISS ``knn`` per 1 GiB block of the memory map +
  ``faiss.ResultHeap`` merge + the same exp(sim / T) vote.
- ``prepare``: ``eigenmap prepare``'s writer (``write_beton``, ``--workers`` processes, JPEG 90)
  against FFCV's own ``DatasetWriter`` on a torchvision ``ImageFolder`` of the same tree with
  the same fields (``RGBImageField(write_mode='jpg', jpeg_quality=90)``, ``IntField``).
- ``benchmark``: a default ``retrieval.run_benchmark`` (what ``eigenmap retrieve`` runs)
  against the plain sweep over the same lengths (one FAISS ``IndexFlatIP`` per prefix length,
  built and searched once).

Each row records both wall times (the timed call only: imports, array opening and the
comparison are outside), the ratio (plain seconds / package seconds: above 1 the package is
faster), whether the results agree (kNN: every prediction equal; exact search: the same ids;
prepare: the same images, labels and pixels; benchmark: the same mAP@R per length), the peak
anonymous memory of each side's process tree (``RssAnon`` of ``/proc/PID/status``, summed over
the process and its children, sampled every 20 ms; the process's own ``RssAnon`` just before
the timed call is given beside it) and the CPU other processes took meanwhile (cores, from
``/proc/stat`` less the CPU time of the side's process tree, worker processes included).
Memory-mapped stages read the whole file once before each side, so both start from the page cache.

Run (under the shared lock on the project's machines):
``python tools/bench_scale.py --rows 200000 --dim 2048 --images 200000 --json bench.json``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

STAGES = ("retrieve", "knn", "prepare", "benchmark")
KNN_KS, KNN_TEMPERATURE, KNN_BLOCK_BYTES = (20, 200), 0.07, 1 << 30
RETRIEVE_DIM, R = 128, 100
JPEG_QUALITY = 90
MAP_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------------
# The package's calls (one small function each, so that a change of retrieval's API or
# defaults is adapted here, in one place)
# ---------------------------------------------------------------------------------------------


def package_exact_search(database, queries: np.ndarray, dim: int, k: int):
    """``eigenmap retrieve``'s exact search at one prefix length: (D, I, build s, search s)."""
    from retrieval import build_index, prefix_codes, prefix_view

    t0 = time.perf_counter()
    index = build_index(prefix_view(database, dim), index="flat", backend="faiss-cpu")
    t1 = time.perf_counter()
    D, I = index.search(prefix_codes(queries, dim), k)
    return D, I, t1 - t0, time.perf_counter() - t1


def package_default_benchmark(database, database_labels, queries, query_labels) -> dict:
    """A default ``retrieval.run_benchmark`` (as ``eigenmap retrieve`` calls it):
    ``{"R", "dims", "map": {dim: codes mAP@R}, "plan": what it planned and how long each part took}``."""
    import retrieval

    result = retrieval.run_benchmark(database, database_labels, queries, query_labels)
    plan = result["plan"]
    return {"R": result["R"], "dims": list(result["dims"]),
            "map": {str(rec["dim"]): rec["codes"]["map"] for rec in result["lengths"]},
            "plan": {key: plan[key] for key in ("held", "timing_queries", "baseline_dims", "baseline_queries",
                                                "pca_fit_rows", "total_to_plain_sweep_units", "estimated_seconds",
                                                "wall_seconds")}}


def package_default_lengths(dim: int) -> list[int]:
    """The lengths a default ``run_benchmark`` sweeps for codes of length ``dim``."""
    import retrieval

    return list(retrieval.default_lengths(dim))


def package_knn(database, labels, queries, num_classes: int) -> dict[int, np.ndarray]:
    from eigenmap.eval.knn import knn_predict

    preds = knn_predict(database, labels, queries, ks=KNN_KS, temperature=KNN_TEMPERATURE, num_classes=num_classes)
    return {k: v.numpy() for k, v in preds.items()}


def package_prepare(tree: Path, out: Path, workers: int) -> None:
    from eigenmap.data import write_beton

    write_beton(tree, out, workers=workers, jpeg_quality=JPEG_QUALITY, overwrite=True)


# ---------------------------------------------------------------------------------------------
# The plain library calls
# ---------------------------------------------------------------------------------------------


def plain_flat_index(database, dim: int, chunk_rows: int = 65536):
    import faiss

    index = faiss.IndexFlatIP(dim)
    for i0 in range(0, len(database), chunk_rows):
        block = np.array(database[i0:i0 + chunk_rows, :dim], dtype=np.float32)
        faiss.normalize_L2(block)
        index.add(block)
    return index


def plain_exact_search(database, queries: np.ndarray, dim: int, k: int):
    import faiss

    t0 = time.perf_counter()
    index = plain_flat_index(database, dim)
    t1 = time.perf_counter()
    xq = np.array(queries[:, :dim], dtype=np.float32)
    faiss.normalize_L2(xq)
    D, I = index.search(xq, k)
    return D, I, t1 - t0, time.perf_counter() - t1


def plain_knn(database, labels, queries, num_classes: int) -> dict[int, np.ndarray]:
    """FAISS ``knn`` per 1 GiB block, ``ResultHeap`` merge, the exp(sim / T) vote."""
    import faiss
    import torch

    xq = np.array(queries, dtype=np.float32)
    faiss.normalize_L2(xq)
    k = max(KNN_KS)
    heap = faiss.ResultHeap(len(xq), k, keep_max=True)
    block_rows = KNN_BLOCK_BYTES // (4 * database.shape[1])
    for b0 in range(0, len(database), block_rows):
        xb = np.array(database[b0:b0 + block_rows], dtype=np.float32)
        faiss.normalize_L2(xb)
        D, I = faiss.knn(xq, xb, min(k, len(xb)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(D, I + b0)
    heap.finalize()
    weights = torch.from_numpy(heap.D / KNN_TEMPERATURE).exp()
    neighbour_labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))[torch.from_numpy(heap.I)]
    out = {}
    for kk in KNN_KS:
        votes = torch.zeros(len(xq), num_classes)
        votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
        out[kk] = votes.argmax(dim=1).numpy()
    return out


def plain_prepare(tree: Path, out: Path, workers: int) -> None:
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter
    from torchvision.datasets import ImageFolder

    fields = {"image": RGBImageField(write_mode="jpg", jpeg_quality=JPEG_QUALITY), "label": IntField()}
    DatasetWriter(str(out), fields, num_workers=workers).from_indexed_dataset(ImageFolder(str(tree)))


def plain_sweep(database, queries: np.ndarray, lengths: list[int], k: int) -> dict[str, tuple]:
    """One exact FAISS search per prefix length: {dim: (D, I) [nq, k + 1]} (one more than k, to
    see whether equal scores straddle rank k)."""
    import faiss

    out = {}
    for m in lengths:
        index = plain_flat_index(database, m)
        xq = np.array(queries[:, :m], dtype=np.float32)
        faiss.normalize_L2(xq)
        out[str(m)] = index.search(xq, k + 1)
    return out


def package_map(D: np.ndarray, I: np.ndarray, query_labels, database_labels, k: int) -> float:
    """mAP@k by ``retrieval``'s definition (tie-aware), to score the plain sweep alike."""
    import retrieval

    return retrieval.retrieval_metrics(I, query_labels, database_labels, D=D, R=k)["map"]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def class_signal(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension scale s and class signal a (see the module docstring), float32 [dim]."""
    j = np.arange(dim, dtype=np.float64)
    scale = (1.0 + j) ** -0.5
    signal = 0.6 * (1.0 + j / max(dim / 16, 1.0)) ** -0.5
    return scale.astype(np.float32), signal.astype(np.float32)


def write_rows(path: Path, rows: int, dim: int, classes: int, seed: int, stream: int,
               chunk_rows: int = 32768) -> np.ndarray:
    """Write [rows, dim] float32 rows to the .npy memory map ``path`` in seeded chunks;
    returns the [rows] int64 labels."""
    centres = np.random.default_rng([seed, 0]).standard_normal((classes, dim), dtype=np.float32)
    scale, signal = class_signal(dim)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    labels = np.empty(rows, dtype=np.int64)
    for number, i0 in enumerate(range(0, rows, chunk_rows)):
        rng = np.random.default_rng([seed, stream, number])
        n = min(chunk_rows, rows - i0)
        y = rng.integers(0, classes, size=n)
        block = rng.standard_normal((n, dim), dtype=np.float32)
        block += signal * centres[y]
        block *= scale
        out[i0:i0 + n] = block
        labels[i0:i0 + n] = y
    out.flush()
    del out
    return labels


def make_arrays(workdir: Path, rows: int, dim: int, queries: int, classes: int, seed: int) -> Path:
    """The database and queries as memory maps (reused when already written with these settings)."""
    folder = workdir / f"arrays-{rows}x{dim}-q{queries}-c{classes}-s{seed}"
    done = folder / "done.json"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    np.save(folder / "database_labels.npy", write_rows(folder / "database.npy", rows, dim, classes, seed, 1))
    np.save(folder / "query_labels.npy", write_rows(folder / "queries.npy", queries, dim, classes, seed, 2))
    done.write_text(json.dumps({"rows": rows, "dim": dim, "queries": queries, "classes": classes, "seed": seed}))
    log(f"wrote {rows} x {dim} database rows and {queries} queries to {folder} in "
        f"{time.perf_counter() - started:.0f} s")
    return folder


def shared_images_dir() -> Path:
    base = os.environ.get("EIGENMAP_SHARED_DATA", str(REPO_ROOT.parent / "shared" / "data"))
    return Path(base) / "imagenette2-96"


def _source_images(root: Path) -> list[Path]:
    train = root / "train"
    if not train.is_dir():
        return []
    return sorted(p for p in train.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))


def _make_picture(rng: np.random.Generator, sources: list[Path]):
    """One small picture: a random crop of a real image, or a seeded synthetic one."""
    from PIL import Image, ImageDraw

    width, height = (int(v) for v in rng.integers(48, 97, size=2))
    if sources:
        with Image.open(sources[int(rng.integers(len(sources)))]) as src:
            src = src.convert("RGB")
            side = int(rng.integers(40, min(src.size) + 1))
            x0, y0 = int(rng.integers(0, src.width - side + 1)), int(rng.integers(0, src.height - side + 1))
            img = src.crop((x0, y0, x0 + side, y0 + side)).resize((width, height), Image.BICUBIC)
            return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img
    base = rng.integers(0, 256, size=3)
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.integers(-120, 121, size=3)
    pixels = np.clip(base + ramp + rng.normal(0, 12, size=(height, width, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        box = (x0, y0, x0 + int(rng.integers(8, width - x0 + 1)), y0 + int(rng.integers(8, height - y0 + 1)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img


def _write_class_folders(args: tuple) -> None:
    root, first, last, per_class, extra, seed, sources = args
    for c in range(first, last):
        folder = root / f"class{c:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class + (1 if c < extra else 0)):
            rng = np.random.default_rng([seed, c, i])
            _make_picture(rng, sources).save(folder / f"img{i:05d}.JPEG", quality=JPEG_QUALITY)


def make_image_tree(workdir: Path, images: int, classes: int, seed: int, workers: int) -> tuple[Path, str]:
    """A tree of ``images`` small JPEGs in ``classes`` folders (reused when already written)."""
    shared = shared_images_dir()
    sources = _source_images(shared)
    origin = (f"random crops of the {len(sources)} Imagenette training images in {shared}, resized to 48-96 px"
              if sources else f"seeded synthetic pictures (48-96 px; {shared} not found)")
    root = workdir / f"images-{images}-c{classes}-s{seed}-{'imagenette' if sources else 'synthetic'}"
    done = root.with_name(root.name + ".done")
    if done.is_file():
        return root, origin
    shutil.rmtree(root, ignore_errors=True)
    per_class, extra = divmod(images, classes)
    step = max(1, classes // (8 * workers))
    jobs = [(root, c, min(c + step, classes), per_class, extra, seed, sources) for c in range(0, classes, step)]
    started = time.perf_counter()
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_class_folders, jobs):
            pass
    done.write_text(origin + "\n")
    log(f"wrote {images} JPEGs in {classes} class folders to {root} in {time.perf_counter() - started:.0f} s "
        f"({origin})")
    return root, origin


def warm_page_cache(path: Path) -> None:
    """Read a file, or every file of a tree, once so that the side timed next starts from the
    page cache."""
    buf = bytearray(1 << 24)
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            with open(file, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


# ---------------------------------------------------------------------------------------------
# One side, in a child process
# ---------------------------------------------------------------------------------------------


def _rss_anon(pid: int | str = "self") -> int:
    """RssAnon of a process in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _pss_anon(pid: int) -> int:
    """The process's proportional share of anonymous memory in bytes: pages shared with a parent
    after a fork count once over the process tree, where RssAnon would count them in each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss_Anon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _busy_seconds() -> float:
    """CPU seconds all cores spent outside idle and iowait since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class TreeCpu(threading.Thread):
    """CPU seconds of this process and every descendant while it runs, reaped or not.

    ``getrusage(RUSAGE_CHILDREN)`` counts only children that were waited for: FFCV's writer
    processes are not (their CPU then read as other processes' load, 1.9 cores of 2). So the
    descendants' CPU times are sampled every ``every`` seconds and the last sample of each kept
    (a child living under ``every`` is missed; the work here runs for seconds).
    """

    def __init__(self, every: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self.me, self.every, self.done = psutil.Process(), every, threading.Event()
        self.seen: dict[int, float] = {}
        self.before = {p.pid: self._cpu(p) for p in self.me.children(recursive=True)}
        self.own0 = self._cpu(self.me)

    @staticmethod
    def _cpu(proc) -> float:
        try:
            t = proc.cpu_times()
        except Exception:  # gone, or a zombie whose times cannot be read
            return 0.0
        return t.user + t.system

    def _sample(self) -> None:
        for child in self.me.children(recursive=True):
            cpu = self._cpu(child)
            if cpu:
                self.seen[child.pid] = max(cpu, self.seen.get(child.pid, 0.0))

    def run(self) -> None:
        while not self.done.wait(self.every):
            self._sample()

    def stop(self) -> float:
        """Stop sampling; CPU seconds of the tree since the tracker was made."""
        self._sample()
        self.done.set()
        self.join()
        own = self._cpu(self.me) - self.own0
        return own + sum(cpu - self.before.get(pid, 0.0) for pid, cpu in self.seen.items())


def _import_for(stage: str, side: str) -> None:
    import faiss  # noqa: F401
    import torch  # noqa: F401

    if side == "ours" or stage == "benchmark":
        import retrieval  # noqa: F401
    if side == "ours":
        import eigenmap.data  # noqa: F401
        import eigenmap.eval.knn  # noqa: F401
    if stage == "prepare":
        import ffcv.writer  # noqa: F401
        import torchvision.datasets  # noqa: F401


def run_child(stage: str, side: str, spec_path: Path) -> None:
    """Run one side of one stage; print its figures as the last stdout line (JSON)."""
    spec = json.loads(spec_path.read_text())
    out_dir = Path(spec["out_dir"])
    figures: dict = {}
    if stage in ("retrieve", "knn", "benchmark"):
        folder = Path(spec["arrays"])
        database = np.load(folder / "database.npy", mmap_mode="r")
        database_labels = np.load(folder / "database_labels.npy")
        queries = np.load(folder / "queries.npy")
        query_labels = np.load(folder / "query_labels.npy")
        if stage == "benchmark" and side == "plain":
            lengths = package_default_lengths(database.shape[1])
    _import_for(stage, side)  # imports are not part of the timed call
    figures["rss_anon_before_bytes"] = _rss_anon()
    tree = TreeCpu()
    tree.start()
    busy0, t0 = _busy_seconds(), time.perf_counter()
    if stage == "retrieve":
        search = package_exact_search if side == "ours" else plain_exact_search
        D, I, build, seconds = search(database, queries, RETRIEVE_DIM, R)
        figures.update(build_seconds=build, search_seconds=seconds)
        np.savez(out_dir / f"{stage}-{side}.npz", D=D, I=I)
    elif stage == "knn":
        knn = package_knn if side == "ours" else plain_knn
        preds = knn(database, database_labels, queries, spec["classes"])
        np.savez(out_dir / f"{stage}-{side}.npz", **{f"k{k}": v for k, v in preds.items()})
    elif stage == "prepare":
        prepare = package_prepare if side == "ours" else plain_prepare
        prepare(Path(spec["tree"]), out_dir / f"{side}.beton", spec["workers"])
    elif stage == "benchmark":
        if side == "ours":
            result = package_default_benchmark(database, database_labels, queries, query_labels)
        else:
            found = plain_sweep(database, queries, lengths, R)
            result = {"R": R, "dims": lengths, "found": found}
    seconds = time.perf_counter() - t0
    background = max(0.0, (_busy_seconds() - busy0) - tree.stop()) / seconds
    figures.update(seconds=seconds, background_cores=background)
    if stage == "benchmark":
        if side == "plain":  # scored after the timed sweep, by the package's definition of mAP@R
            found = result["found"]
            result = {"R": R, "dims": lengths,
                      "map": {m: package_map(D[:, :R], I[:, :R], query_labels, database_labels, R)
                              for m, (D, I) in found.items()},
                      "queries_with_a_tie_at_R": {m: int((D[:, R - 1] == D[:, R]).sum())
                                                  for m, (D, I) in found.items()}}
        figures["result"] = result
    print(json.dumps(figures), flush=True)


class _MemorySampler(threading.Thread):
    """Peak anonymous memory of a process and its descendants, sampled every 20 ms: RssAnon of
    a lone process (cheap to read), the summed Pss_Anon of a tree (forked writer processes share
    their parent's pages)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done.is_set():
            try:
                pids = [self.pid] + [p.pid for p in root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            self.peak = max(self.peak, _rss_anon(self.pid) if len(pids) == 1 else sum(_pss_anon(p) for p in pids))
            self.done.wait(0.02)


def run_side(stage: str, side: str, spec_path: Path, log_path: Path) -> dict:
    """Run one side in a child process; returns its figures plus the sampled peak memory."""
    with open(log_path, "a") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", stage, side, str(spec_path)],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO_ROOT)
        sampler = _MemorySampler(proc.pid)
        sampler.start()
        stdout, _ = proc.communicate()
        sampler.done.set()
        sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"bench_scale: the {side} side of {stage} failed (exit {proc.returncode}); see {log_path}")
    figures = json.loads(stdout.strip().splitlines()[-1])
    figures["peak_rss_anon_bytes"] = sampler.peak
    return figures


# ---------------------------------------------------------------------------------------------
# Comparing the two sides' results
# ---------------------------------------------------------------------------------------------


def agreement(stage: str, out_dir: Path, ours: dict, plain: dict, arrays: Path | None) -> dict:
    if stage == "retrieve":
        a, b = np.load(out_dir / "retrieve-ours.npz"), np.load(out_dir / "retrieve-plain.npz")
        same_ids = float(np.mean(a["I"] == b["I"]))
        overlap = float(np.mean([len(np.intersect1d(x, y)) / len(x) for x, y in zip(a["I"], b["I"])]))
        return {"agree": overlap >= 0.999, "same_ids_same_rank": same_ids, "id_overlap": overlap,
                "max_score_difference": float(np.abs(a["D"] - b["D"]).max())}
    if stage == "knn":
        a, b = np.load(out_dir / "knn-ours.npz"), np.load(out_dir / "knn-plain.npz")
        truth = np.load(arrays / "query_labels.npy")
        per_k = {str(k): {"different_predictions": int((a[f"k{k}"] != b[f"k{k}"]).sum()),
                          "top1_ours": 100.0 * float((a[f"k{k}"] == truth).mean()),
                          "top1_plain": 100.0 * float((b[f"k{k}"] == truth).mean())} for k in KNN_KS}
        return {"agree": all(v["different_predictions"] == 0 for v in per_k.values()), "k": per_k}
    if stage == "prepare":
        return _compare_betons(out_dir / "ours.beton", out_dir / "plain.beton")
    # where equal scores straddle rank R, which of them enter the top R is each search's own
    # choice: those lengths are compared for the record but not held to agree; elsewhere scores
    # within float32 rounding of each other (the two sides normalise with different code) may
    # still swap at rank R, hence a tolerance of 0.1 mAP points
    maps_ours, maps_plain = ours["result"]["map"], plain["result"]["map"]
    ties = plain["result"]["queries_with_a_tie_at_R"]
    compared = [m for m in maps_plain if ties[m] == 0]
    diff = max((abs(maps_ours[m] - maps_plain[m]) for m in compared), default=0.0)
    return {"agree": ours["result"]["dims"] == plain["result"]["dims"] and bool(compared) and diff < MAP_TOLERANCE,
            "dims": plain["result"]["dims"], "compared_dims": compared, "max_map_difference": diff,
            "queries_with_a_tie_at_R": ties, "map": {m: [maps_ours[m], maps_plain[m]] for m in maps_plain}}


def _compare_betons(ours: Path, plain: Path, sample: int = 200) -> dict:
    """Same image count, labels in the same order, and identical pixels on a seeded sample."""
    import cv2
    from ffcv.reader import Reader

    readers = [Reader(str(p)) for p in (ours, plain)]
    counts = [int(r.num_samples) for r in readers]
    labels_equal = counts[0] == counts[1] and np.array_equal(readers[0].metadata["f1"], readers[1].metadata["f1"])
    worst = 0
    if counts[0] == counts[1]:
        files = [np.memmap(p, dtype=np.uint8, mode="r") for p in (ours, plain)]
        sizes = [dict(zip(r.alloc_table["ptr"].tolist(), r.alloc_table["size"].tolist())) for r in readers]
        for i in np.random.default_rng(0).choice(counts[0], size=min(sample, counts[0]), replace=False):
            images = []
            for reader, data, size in zip(readers, files, sizes):
                ptr = int(reader.metadata["f0"][i]["data_ptr"])
                images.append(cv2.imdecode(np.asarray(data[ptr:ptr + size[ptr]]), cv2.IMREAD_COLOR).astype(int))
            worst = max(worst, int(np.abs(images[0] - images[1]).max()) if images[0].shape == images[1].shape
                        else 255)
    return {"agree": labels_equal and worst == 0, "images": counts, "labels_equal": labels_equal,
            "sampled_max_pixel_difference": worst}


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"bench_scale: {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(memory / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def library_versions() -> dict:
    import faiss
    import ffcv
    import torch
    import torchvision

    return {"faiss": faiss.__version__, "ffcv": ffcv.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__}


WORK = {
    "retrieve": ("exact search at {dim} of {full} dims, {rows:,} x {full:,} float32 memmap, {queries:,} queries, "
                 "R = {R}"),
    "knn": "weighted kNN k = 20, 200 on {rows:,} x {full:,} float32 memmap, {queries:,} queries",
    "prepare": "{images:,} small JPEGs in {classes:,} class folders, {workers} workers, JPEG 90",
    "benchmark": "default run_benchmark vs the plain sweep, {rows:,} x {full:,}, {queries:,} queries",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, required=True, help="database rows")
    p.add_argument("--dim", type=int, required=True, help="feature width")
    p.add_argument("--queries", type=int, default=10000, help="queries (default 10,000)")
    p.add_argument("--classes", type=int, default=1000, help="classes of the arrays and the image tree (default 1,000)")
    p.add_argument("--images", type=int, default=0, help="JPEGs of the prepare stage (default 0: no prepare stage)")
    p.add_argument("--workers", type=int, default=2, help="writer processes of both writers (default 2)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)} (default all)")
    p.add_argument("--rounds", type=int, default=1, help="rounds per stage, the side order alternating (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench-scale"), help="arrays, images and outputs")
    p.add_argument("--keep", action="store_true", help="keep the arrays and images for the next run")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures here")
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"--stages {args.stages}: {', '.join(bad)} unknown; accepted: {', '.join(STAGES)}")
    if args.images <= 0 and "prepare" in stages:
        stages.remove("prepare")
    for name in ("rows", "dim", "queries", "classes", "workers", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} {getattr(args, name)}: accepted: 1 or more")
    if "retrieve" in stages and args.dim < RETRIEVE_DIM:
        p.error(f"--dim {args.dim}: the retrieve stage searches a {RETRIEVE_DIM}-dim prefix; pass --dim >= "
                f"{RETRIEVE_DIM} or leave retrieve out of --stages")
    if args.rows < max(KNN_KS) or args.rows < R:
        p.error(f"--rows {args.rows}: accepted: at least {max(max(KNN_KS), R)} (k = 200, R = 100)")
    args.stage_list = stages
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        run_child(argv[1], argv[2], Path(argv[3]))
        return 0
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    out_dir = args.workdir / f"out-{os.getpid()}"
    out_dir.mkdir()
    spec = {"out_dir": str(out_dir), "classes": args.classes, "workers": args.workers}
    created: list[Path] = []
    if {"retrieve", "knn", "benchmark"} & set(args.stage_list):
        arrays = make_arrays(args.workdir, args.rows, args.dim, args.queries, args.classes, args.seed)
        spec["arrays"] = str(arrays)
        created.append(arrays)
    origin = None
    if "prepare" in args.stage_list:
        tree, origin = make_image_tree(args.workdir, args.images, args.classes, args.seed, args.workers)
        spec["tree"] = str(tree)
        created += [tree, tree.with_name(tree.name + ".done")]
    spec_path = out_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    log_path = out_dir / "children.log"
    sizes = {"rows": args.rows, "full": args.dim, "dim": RETRIEVE_DIM, "queries": args.queries, "R": R,
             "images": args.images, "classes": args.classes, "workers": args.workers}
    results = {stage: {"work": WORK[stage].format(**sizes), "rounds": []} for stage in args.stage_list}
    try:
        for round_number in range(args.rounds):
            for stage in args.stage_list:
                order = ("ours", "plain") if round_number % 2 == 0 else ("plain", "ours")
                sides = {}
                for side in order:
                    warm = Path(spec["tree"]) if stage == "prepare" else Path(spec["arrays"]) / "database.npy"
                    warm_page_cache(warm)
                    log(f"round {round_number + 1}/{args.rounds}: {stage}, {side} side")
                    sides[side] = run_side(stage, side, spec_path, log_path)
                    os.sync()  # the next side does not share the disk with this one's write-back
                    log(f"  {side}: {sides[side]['seconds']:.1f} s, peak anonymous memory "
                        f"{sides[side]['peak_rss_anon_bytes'] / 2**20:.0f} MiB")
                sides["agreement"] = agreement(stage, out_dir, sides["ours"], sides["plain"],
                                               Path(spec["arrays"]) if "arrays" in spec else None)
                sides["order"] = list(order)
                results[stage]["rounds"].append(sides)
                for f in out_dir.glob("*.beton"):
                    f.unlink()
        for stage, entry in results.items():
            best = {side: min(r[side]["seconds"] for r in entry["rounds"]) for side in ("ours", "plain")}
            entry.update(ours_seconds=best["ours"], plain_seconds=best["plain"], ratio=best["plain"] / best["ours"],
                         agree=all(r["agreement"]["agree"] for r in entry["rounds"]),
                         ours_peak_rss_anon_bytes=max(r["ours"]["peak_rss_anon_bytes"] for r in entry["rounds"]),
                         plain_peak_rss_anon_bytes=max(r["plain"]["peak_rss_anon_bytes"] for r in entry["rounds"]))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if not args.keep:
            for path in created:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    report = {
        "command": "python tools/bench_scale.py " + " ".join(argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "versions": library_versions(),
        "settings": {**sizes, "seed": args.seed, "rounds": args.rounds, "stages": args.stage_list,
                     "knn_ks": list(KNN_KS), "knn_temperature": KNN_TEMPERATURE},
        "image_origin": origin,
        "method": ("each side in its own process, one after the other, order alternating between rounds; "
                   "seconds: wall time of the timed call only (best of the rounds); ratio: plain seconds / "
                   "package seconds; peak_rss_anon_bytes: peak anonymous memory of the side, sampled every "
                   "20 ms (RssAnon of a lone process, Pss_Anon summed over a process tree); background_cores: "
                   "CPU other processes took during the call (the machine's busy time from /proc/stat less "
                   "the side's process tree's, its children's CPU times sampled every 50 ms); the memory map "
                   "or the image tree read once "
                   "before each side (page cache warm), sync after each side"),
        "stages": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    return 0 if all(entry["agree"] for entry in results.values()) else 1


def table(report: dict) -> str:
    """The markdown table of a report."""
    lines = ["| stage | work | this package | plain library | ratio | peak anon. memory (package / plain) "
             "| results agree | background load |", "|---|---|---|---|---|---|---|---|"]
    for stage, e in report["stages"].items():
        load = max(max(r["ours"]["background_cores"], r["plain"]["background_cores"]) for r in e["rounds"])
        lines.append(f"| {stage} | {e['work']} | {e['ours_seconds']:.1f} s | {e['plain_seconds']:.1f} s | "
                     f"{e['ratio']:.2f} | {e['ours_peak_rss_anon_bytes'] / 2**30:.2f} / "
                     f"{e['plain_peak_rss_anon_bytes'] / 2**30:.2f} GiB | {'yes' if e['agree'] else 'NO'} | "
                     f"up to {load:.2f} cores |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
