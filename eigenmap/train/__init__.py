"""Training: the worker loop and its parts.

- ``checks``: the one config load of every entry point, and the pre-flight checks;
- ``worker``: one process of a run (``train``), whoever launched it;
- ``step``: forward -> backward -> optimiser step, shared with the benchmarks;
- ``engine`` (device, process group, DeepSpeed), ``optim``
  (LARS), ``schedule``;
- ``checkpoint`` (what a checkpoint holds, where it goes) and ``checkpoint_files`` (its file
  list with sizes and checksums, verified before a resume);
- ``resume`` (which config changes a resume refuses; the loader position after an allowed one),
  ``run_lock`` (one run per run directory), ``preempt`` (SIGTERM and Ctrl-C: save, exit 75 or
  130), ``run_start`` (the start and end every entry point shares), ``exit_codes`` (their table);
- ``run_logger`` (progress bar, TensorBoard, metrics.jsonl; each step logged once).

Import the submodules directly (``from eigenmap.train.worker import train``): the launcher's
pre-flight imports ``checks`` alone, without DeepSpeed.
"""
