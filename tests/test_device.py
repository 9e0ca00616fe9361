"""modules.device.resolve_device: the one --device resolver of the CLI, training, evaluation and benchmarks."""
from __future__ import annotations

import pytest
import torch

from modules.device import DeviceError, check_device_name, resolve_device


def test_auto_and_none_pick_cuda_only_when_it_is_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)  # a torchrun process's own GPU


def test_cpu_is_always_there():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:", "cuda:x", "CPU", "", "cuda:-1"])
def test_a_bad_string_names_the_option_and_the_choices(name):
    with pytest.raises(DeviceError, match=r"--device must be auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)
    with pytest.raises(ValueError, match="device must be"):  # DeviceError is a ValueError: CLIs print one line
        check_device_name(name, option="device")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_clear_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_device_name(name)  # the syntax is fine: a config naming cuda may be checked on any machine
    with pytest.raises(DeviceError, match=rf"--eval_device {name} requested but no CUDA GPU is available; "
                                          r"use --eval_device cpu"):
        resolve_device(name, option="--eval_device")


def test_a_cuda_index_past_the_visible_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"cuda:2 requested but only 2 CUDA device"):
        resolve_device("cuda:2")


def test_mps_without_mps_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="mps requested but MPS is not available"):
        resolve_device("mps")
