"""`eigenmap export --format timm`'s refusals, in-process (the round trip itself: test_launch_timm.py)."""

from __future__ import annotations

from launch.cli import main


def test_a_missing_run_is_refused_with_exit_code_2_naming_it(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "timm", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "eigenmap export: error:" in err and "nope" in err and not (tmp_path / "out").exists()


def test_the_timm_format_needs_an_output_folder(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "timm"]) == 2
    assert "--format timm needs --out DIR" in capsys.readouterr().err
