"""What a start says it does with the run directory, and how a run's end is reported (the same for
`eigenmap train` and the plain worker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eigenmap.train.checkpoint import LocalCheckpointStore
from eigenmap.train.exit_codes import EXIT_CODES
from eigenmap.train.run_start import command_line, report_end, start_sentence


def _log_steps(run_dir: Path, *steps: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in steps:
            f.write(json.dumps({"step": step, "loss": 0.0}) + "\n")
        f.write('{"step": 9')  # a line cut short by a killed process


def test_a_new_run_says_it_starts_at_step_0(tmp_path):
    assert start_sentence(tmp_path, None, 0) == f"no checkpoint in {tmp_path}: starting at step 0"


def test_a_run_without_a_checkpoint_says_how_many_logged_steps_it_redoes(tmp_path):
    _log_steps(tmp_path, 1, 2, 3, 38)
    assert start_sentence(tmp_path, None, 0) == (f"no checkpoint in {tmp_path}: starting at step 0; the 38 steps it "
                                                 "logged before (metrics.jsonl) will be redone")


def test_a_resume_names_its_checkpoint_and_the_steps_logged_after_it(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "step_00000040"
    assert start_sentence(tmp_path, checkpoint, 40) == f"resuming from step 40 ({checkpoint})"
    _log_steps(tmp_path, 20, 40, 50, 57)
    assert start_sentence(tmp_path, checkpoint, 40) == (f"resuming from step 40 ({checkpoint}); the 17 steps logged "
                                                        "after it (to step 57) will be redone")


def test_a_rerun_command_is_quoted_for_the_shell():
    assert command_line("eigenmap", "train", "my config.yaml", "train.run_dir=runs/a b") == \
        "eigenmap train 'my config.yaml' 'train.run_dir=runs/a b'"


def _checkpoint(run_dir: Path, step: int) -> Path:
    def write(path: Path) -> None:  # the parts find_latest checks for (their contents are not read)
        (path / "engine").mkdir()
        (path / "trainer_state.pt").write_bytes(b"0")
        (path / "rng_rank0.pt").write_bytes(b"0")
        (path / "meta.json").write_text(json.dumps({"step": step, "world_size": 1}))

    LocalCheckpointStore(run_dir / "checkpoints", keep=2).save(step, write, {})
    return run_dir / "checkpoints" / f"step_{step:08d}"


@pytest.mark.parametrize("status", ["interrupted", "preempted"])
def test_a_stopped_run_names_the_checkpoint_kept_and_the_command_that_resumes_it(status, tmp_path, capsys):
    kept = _checkpoint(tmp_path, 12)
    summary = {"status": status, "message": "stopped at step 12 with a checkpoint saved"}
    assert report_end("eigenmap train", summary, run_dir=tmp_path, rerun="eigenmap train c.yaml") == EXIT_CODES[status]
    err = capsys.readouterr().err.splitlines()
    assert err == [f"eigenmap train: {status}: stopped at step 12 with a checkpoint saved",
                   f"eigenmap train: the latest checkpoint is step 12 ({kept}); to resume, run the same command "
                   "again: eigenmap train c.yaml"]


def test_a_stop_without_a_checkpoint_says_a_rerun_starts_at_step_0(tmp_path, capsys):
    summary = {"status": "interrupted", "message": "aborted"}
    assert report_end("eigenmap train", summary, run_dir=tmp_path, rerun="eigenmap train c.yaml") == 130
    assert "no checkpoint was saved: a rerun starts at step 0" in capsys.readouterr().err


def test_a_finished_run_is_reported_on_stdout_and_an_unknown_outcome_is_a_failure(tmp_path, capsys):
    assert report_end("eigenmap train", {"status": "finished", "message": "all 8 steps of the plan trained"}, run_dir=tmp_path,
                      rerun="x", details="run dir r") == 0
    assert capsys.readouterr().out == "eigenmap train: finished: all 8 steps of the plan trained (run dir r)\n"
    assert report_end("eigenmap train", {"status": "exploded"}, run_dir=tmp_path, rerun="x") == EXIT_CODES["failed"]
