"""Training: the worker loop and its parts.

- ``checks``: the one config load of every entry point, and the pre-flight checks;
- ``worker``: one process of a run (``train``), whoever launched it;
- ``step``: forward -> backward -> optimiser step, shared with the benchmarks;
- ``engine`` (device, process group, DeepSpeed), ``optim`` (LARS), ``schedule``,
  ``checkpoint``, ``run_logger`` (progress bar, TensorBoard, metrics.jsonl).

Import the submodules directly (``from eigenmap.train.worker import train``): the launcher's
pre-flight imports ``checks`` alone, without DeepSpeed.
"""
