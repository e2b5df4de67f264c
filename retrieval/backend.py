"""Which engine runs a search, chosen once and reported with every result.

``auto`` picks FAISS on the GPU(s) when the installed FAISS has GPU support and sees a GPU;
else, when torch sees a CUDA device, the torch exact search on that GPU; else FAISS on the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import faiss

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "faiss-cpu", "faiss-gpu", "torch")


@dataclass(frozen=True)
class Backend:
    """A resolved backend.

    Attributes:
        name: "faiss-cpu", "faiss-gpu" or "torch".
        device: "cpu", "cuda:0", ... ("cuda:0-3" for FAISS sharded over four GPUs).
        num_gpus: GPUs the search uses (0 on the CPU).
    """

    name: str
    device: str
    num_gpus: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def faiss_num_gpus() -> int:
    """GPUs visible to FAISS; 0 for faiss-cpu, which lacks the GPU symbols."""
    if not (hasattr(faiss, "get_num_gpus") and hasattr(faiss, "StandardGpuResources")):
        return 0
    return int(faiss.get_num_gpus())


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(backend: str = "auto", device: str | None = None) -> Backend:
    """Resolve ``backend`` (one of :data:`BACKENDS`) to the engine and device that will run.

    Args:
        backend: "auto", "faiss-cpu", "faiss-gpu" or "torch".
        device: torch device for the "torch" backend ("cpu", "cuda", "cuda:1"); default: "cuda"
            when available, else "cpu". Ignored by the FAISS backends.

    Raises:
        ValueError: an unknown backend, "faiss-gpu" without a GPU FAISS, a CUDA device asked of
            torch without CUDA, or a device given to a FAISS backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if device is not None and backend not in ("torch", "auto"):
        raise ValueError(f"device={device!r} applies to the torch backend only; got backend={backend!r}")
    if backend == "auto":
        if device is not None:
            backend = "torch"
        elif faiss_num_gpus() > 0:
            backend = "faiss-gpu"
        elif torch_cuda_available():
            backend = "torch"
        else:
            backend = "faiss-cpu"
    if backend == "faiss-cpu":
        chosen = Backend("faiss-cpu", "cpu")
    elif backend == "faiss-gpu":
        ngpu = faiss_num_gpus()
        if ngpu == 0:
            raise ValueError(
                "backend 'faiss-gpu' needs a GPU build of FAISS (pip install faiss-gpu-cu12) and a visible GPU; "
                "use 'faiss-cpu', 'torch' or 'auto'"
            )
        chosen = Backend("faiss-gpu", "cuda:0" if ngpu == 1 else f"cuda:0-{ngpu - 1}", ngpu)
    else:
        chosen = _torch_backend(device)
    logger.info("retrieval backend: %s on %s", chosen.name, chosen.device)
    return chosen


def _torch_backend(device: str | None) -> Backend:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device; use device='cpu'")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        return Backend("torch", f"cuda:{index}", 1)
    if dev.type != "cpu":
        raise ValueError(f"the torch backend runs on 'cpu' or 'cuda[:i]'; got device {device!r}")
    return Backend("torch", "cpu")
