"""How a stop request gets in: a SIGTERM to this process, or one to the launcher that writes the
run's stop file. Real signals to the test process itself; a real SIGTERM to a training worker
is in test_train_reliability.py."""

from __future__ import annotations

import os
import signal
import time

import pytest

from eigenmap.train import preempt
from eigenmap.run_layout import RunDir
from eigenmap.train.preempt import (StopRequest, clear_stop_request, forward_sigterm_to_run,
                                    sigterm_sets_stop_flag)


@pytest.fixture(autouse=True)
def no_stop_left():
    preempt._signalled.clear()
    yield
    preempt._signalled.clear()  # a process-wide flag: the next test starts without a request


def _deliver_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # Python runs the handler at its next bytecode boundary


def test_a_sigterm_sets_the_flag_instead_of_killing_and_the_handler_is_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest(tmp_path)
    with sigterm_sets_stop_flag() as installed:
        assert installed and not stop.requested()
        _deliver_sigterm()
        assert stop.requested()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_to_the_launcher_writes_the_stop_file_the_workers_read(tmp_path):
    with forward_sigterm_to_run(tmp_path):
        _deliver_sigterm()
    assert RunDir(tmp_path).stop_file.exists()
    preempt._signalled.clear()  # a worker is another process: it sees only the file
    assert StopRequest(tmp_path).requested()
    clear_stop_request(tmp_path)  # the next start forgets it
    assert not StopRequest(tmp_path).requested()
