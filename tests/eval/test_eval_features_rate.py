"""The extraction's sustained rate: the window after the first batch arrives and what it holds."""

from __future__ import annotations

import pytest

from eigenmap.eval.features import _steady_rate


def test_steady_rate_counts_the_images_of_the_first_batch_whose_forward_its_window_holds():
    # 1 s to the first batch (FFCV compiling its pipeline); from then to the end of the loop, 4 s
    # and 8 CPU seconds in which all 400 images went through the model, the first 100 included
    out = _steady_rate(0.0, (1.0, 10.0), (5.0, 18.0), 400)
    assert out["first_batch_seconds"] == pytest.approx(1.0)
    assert out["steady_images_per_second"] == pytest.approx(100.0)
    assert out["steady_cpu_ms_per_image"] == pytest.approx(20.0)


def test_steady_rate_of_a_single_batch_is_its_own_rate_and_none_without_batches():
    assert _steady_rate(0.0, (1.0, 1.0), (1.5, 2.0), 50)["steady_images_per_second"] == pytest.approx(100.0)
    assert _steady_rate(0.0, None, (0.1, 0.1), 0) == {
        "first_batch_seconds": None, "steady_images_per_second": None, "steady_cpu_ms_per_image": None}
