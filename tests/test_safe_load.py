"""Safe checkpoint loading (weights_only + Namespace allow-list) and atomic saving."""

from __future__ import annotations

import argparse
import os
import zipfile
from pathlib import Path

import pytest
import torch

from modules.io import CheckpointError, atomic_save, atomic_write_bytes, atomic_write_text, safe_torch_load
from release_fixtures import (
    base_tokenizer_checkpoint,
    karl_checkpoint,
    load_layout,
    save_checkpoint,
)


class _WritesFile:
    """A pickle payload that creates a file when unpickled (stands in for any code execution)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


class _RunsShell:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Custom:
    pass


class _FailsToPickle:
    def __reduce__(self):
        raise RuntimeError("simulated crash while pickling")


def test_karl_checkpoint_with_namespace_args_loads(tmp_path):
    checkpoint = karl_checkpoint("vae", quantize_latent=False, with_scaler=True)
    path = save_checkpoint(checkpoint, tmp_path / "karl.pth")
    loaded = safe_torch_load(path)
    assert isinstance(loaded["args"], argparse.Namespace)
    assert loaded["args"].base_tokenizer == "vae" and loaded["args"].quantize_latent is False
    assert loaded["epoch"] == checkpoint["epoch"]
    assert set(loaded["model"]) == set(load_layout("karl_small_vae_continuous"))
    for key, value in checkpoint["ema"].items():
        assert torch.equal(loaded["ema"][key], value), key


def test_base_tokenizer_wrappers_load(tmp_path):
    for kind, wrapper in (("vqgan", "state_dict"), ("vqgan", "bare"), ("vae", "model")):
        checkpoint = base_tokenizer_checkpoint(kind, wrapper=wrapper)
        loaded = safe_torch_load(save_checkpoint(checkpoint, tmp_path / f"{kind}_{wrapper}.ckpt"))
        state = loaded if wrapper == "bare" else loaded[wrapper]
        expected = checkpoint if wrapper == "bare" else checkpoint[wrapper]
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)


@pytest.mark.parametrize("payload_cls", [_WritesFile, _RunsShell])
@pytest.mark.parametrize("legacy_format", [False, True])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload_cls, legacy_format):
    target = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "args": payload_cls(target)}, path,
               _use_new_zipfile_serialization=not legacy_format)
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(path)
    message = str(info.value)
    assert "arbitrary Python objects" in message and "refused" in message
    assert str(path) in message
    # The message names the global the file wanted (os.system; Path.write_text pickles via getattr).
    assert ("system" in message) if payload_cls is _RunsShell else ("getattr" in message)
    assert not target.exists()


def test_plain_pickle_of_custom_class_is_refused_naming_it(tmp_path):
    path = tmp_path / "custom.pth"
    torch.save({"obj": _Custom()}, path)
    with pytest.raises(CheckpointError, match=r"_Custom"):
        safe_torch_load(path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "checkpoint.pth"
    with pytest.raises(CheckpointError, match="not found") as info:
        safe_torch_load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [
    b"<!DOCTYPE html><html><head><title>Dropbox</title></head><body>Sign in</body></html>",
    b"",
    bytes(range(256)) * 4,
])
def test_non_checkpoint_files_raise_checkpoint_error(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(path)
    assert str(path) in str(info.value)


def test_truncated_checkpoint_raises_checkpoint_error(tmp_path):
    path = save_checkpoint(karl_checkpoint("vqgan", True, with_optimizer=False), tmp_path / "full.pth")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid PyTorch checkpoint"):
        safe_torch_load(truncated)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a file"):
        safe_torch_load(tmp_path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# --- atomic writes ----------------------------------------------------------------------------------------

def test_atomic_save_roundtrip_and_no_litter(tmp_path):
    path = tmp_path / "sub" / "checkpoint-last.pth"
    atomic_save({"epoch": 3, "args": argparse.Namespace(lr=1e-4)}, path)
    assert safe_torch_load(path)["epoch"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint-last.pth"]


def test_crash_during_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint-last.pth"
    atomic_save({"epoch": 1, "w": torch.arange(4.0)}, path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        atomic_save({"epoch": 2, "w": torch.arange(4.0), "bad": _FailsToPickle()}, path)
    previous = safe_torch_load(path)
    assert previous["epoch"] == 1 and torch.equal(previous["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-last.pth"]


def test_crash_during_first_save_leaves_no_file(tmp_path):
    path = tmp_path / "new.pth"
    with pytest.raises(RuntimeError):
        atomic_save({"bad": _FailsToPickle()}, path)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text_and_bytes_replace_content(tmp_path):
    path = tmp_path / "note.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["note.txt"]


def test_atomic_save_output_is_a_zip_checkpoint(tmp_path):
    # torch.save's zip format is what the loaders (and torch.load's mmap) expect.
    path = atomic_save({"w": torch.ones(3)}, tmp_path / "w.pth")
    assert zipfile.is_zipfile(path)
    with open(path, "rb") as f:
        assert f.read(2) == b"PK"


def test_atomic_save_gives_normal_file_permissions(tmp_path):
    """Files written atomically must be readable like ones from a plain open() (not mkstemp's 0600)."""
    import os
    import stat

    from modules.io import atomic_save

    old = os.umask(0o022)
    try:
        path = atomic_save({"x": 1}, tmp_path / "ckpt.pth")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
