"""Checkpoint directories: atomic publication, keep-last-K, latest-complete, file lists with
checksums and the fall-back past a damaged one, exported weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from eigenmap.config import from_dict
from eigenmap.models import build_model
from eigenmap.run import export_weights
from eigenmap.train.checkpoint import LocalCheckpointStore, find_latest, is_complete, newest_good, verify_checkpoint


def _write_complete(step: int):
    """A writer producing every file a complete single-rank checkpoint has."""
    def write(path: Path) -> None:
        (path / "engine").mkdir(parents=True, exist_ok=True)
        torch.save({"w": torch.full((2,), float(step))}, path / "engine" / "mp_rank_00_model_states.pt")
        torch.save({"step": step}, path / "trainer_state.pt")
        torch.save({"torch": torch.get_rng_state()}, path / "rng_rank0.pt")
        (path / "meta.json").write_text(json.dumps({"step": step, "world_size": 1}))
    return write



def test_a_checkpoint_without_its_file_list_is_unusable(tmp_path):
    """Every checkpoint is sealed (its files listed) before it is published: one without a list
    was never finished, and its parts alone cannot say whether they are whole."""
    root = tmp_path / "checkpoints"
    store = LocalCheckpointStore(root, keep=3)
    store.save(2, _write_complete(2), {})
    store.save(4, _write_complete(4), {})
    (root / "step_00000004" / "files.json").unlink()
    assert "no file list" in verify_checkpoint(root / "step_00000004", checksums=False)
    assert find_latest(root).name == "step_00000002"

def test_an_interrupted_write_never_hides_the_previous_checkpoint(tmp_path):
    store = LocalCheckpointStore(tmp_path / "checkpoints", keep=3)
    store.save(4, _write_complete(4), {})

    def crash(path: Path) -> None:
        _write_complete(8)(path)
        (path / "meta.json").unlink()  # half-written ...
        raise KeyboardInterrupt("killed while writing")  # ... and the process dies

    with pytest.raises(KeyboardInterrupt):
        store.save(8, crash, {})
    with store.latest() as latest:
        assert latest == tmp_path / "checkpoints" / "step_00000004"
    assert not (tmp_path / "checkpoints" / "step_00000008").exists()
    store.save(8, _write_complete(8), {})  # the next attempt replaces the leftover temp dir
    assert find_latest(tmp_path / "checkpoints").name == "step_00000008"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_only_the_last_k_are_kept_and_incomplete_ones_are_skipped(tmp_path):
    root = tmp_path / "checkpoints"
    store = LocalCheckpointStore(root, keep=2)
    for step in (2, 4, 6, 8):
        store.save(step, _write_complete(step), {})
    assert sorted(p.name for p in root.iterdir()) == ["step_00000006", "step_00000008"]
    (root / "step_00000008" / "rng_rank0.pt").unlink()  # e.g. a copy that lost a rank's file
    assert not is_complete(root / "step_00000008")
    assert find_latest(root).name == "step_00000006"
    assert find_latest(tmp_path / "nothing-here") is None


def test_exported_encoder_is_a_plain_torchvision_state_dict(tmp_path):
    cfg = from_dict({"model": {"arch": "resnet18", "projector_hidden_dim": 16, "projector_out_dim": 8,
                               "num_classes": 10}})
    model = build_model(cfg).to(memory_format=torch.channels_last)
    paths = export_weights(model, tmp_path)
    encoder = torch.load(paths["encoder.pt"], weights_only=True)
    net = torchvision.models.resnet18()
    missing, unexpected = net.load_state_dict(encoder, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    assert all(v.is_contiguous() for v in encoder.values())
    full = torch.load(paths["model.pt"], weights_only=True)
    assert any(k.endswith("l2bn.eigenvalues") for k in full)
    fresh = build_model(cfg)
    fresh.load_state_dict(full)
    assert not list(tmp_path.glob(".*.tmp"))


def _saved(tmp_path: Path, steps=(4, 8)) -> Path:
    root = tmp_path / "checkpoints"
    store = LocalCheckpointStore(root, keep=3)
    for step in steps:
        store.save(step, _write_complete(step), {})
    return root


def test_a_checkpoint_lists_its_files_with_sizes_and_checksums(tmp_path):
    root = _saved(tmp_path, steps=(4,))
    listed = json.loads((root / "step_00000004" / "files.json").read_text())
    assert set(listed) == {"engine/mp_rank_00_model_states.pt", "trainer_state.pt", "rng_rank0.pt", "meta.json"}
    engine = root / "step_00000004" / "engine" / "mp_rank_00_model_states.pt"
    assert listed["engine/mp_rank_00_model_states.pt"]["bytes"] == engine.stat().st_size
    assert len(listed["meta.json"]["sha256"]) == 64


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, caplog):
    root = _saved(tmp_path)
    engine = root / "step_00000008" / "engine" / "mp_rank_00_model_states.pt"
    engine.write_bytes(engine.read_bytes()[:100])  # truncated on disk after it was published
    assert not is_complete(root / "step_00000008")
    assert "has 100 bytes" in verify_checkpoint(root / "step_00000008", checksums=False)
    with caplog.at_level("WARNING", logger="eigenmap.train.checkpoint"):
        with LocalCheckpointStore(root, keep=3).latest() as latest:
            assert latest == root / "step_00000004"
    assert "step_00000008 is unusable" in caplog.text and "truncated" in caplog.text


def test_damage_of_the_same_size_is_found_by_the_checksum(tmp_path, caplog):
    root = _saved(tmp_path)
    rng = root / "step_00000008" / "rng_rank0.pt"
    data = bytearray(rng.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rng.write_bytes(bytes(data))
    assert verify_checkpoint(root / "step_00000008", checksums=False) is None  # sizes alone cannot tell
    assert "does not match its checksum" in verify_checkpoint(root / "step_00000008", checksums=True)
    with caplog.at_level("WARNING", logger="eigenmap.train.checkpoint"):
        assert newest_good(None, root) == root / "step_00000004"
    assert "step_00000008 is unusable (rng_rank0.pt does not match its checksum" in caplog.text
    # a launcher's candidate (Ray's latest) is verified the same way, then the older ones
    assert newest_good(root / "step_00000008", root) == root / "step_00000004"


def test_a_file_the_list_does_not_know_makes_the_checkpoint_incomplete(tmp_path):
    root = _saved(tmp_path, steps=(4,))
    (root / "step_00000004" / "rng_rank1.pt").write_bytes(b"x")  # e.g. a rank's list that never arrived
    assert "not in its file list" in verify_checkpoint(root / "step_00000004", checksums=False)
