"""relpos.transfer.to_device: host tensors bound for CUDA are pinned and copied without blocking the
host; every other move is tensor.to(device), a tensor already there being returned as it is."""

from __future__ import annotations

import pytest
import torch

from relpos.transfer import to_device


def test_on_the_cpu_a_tensor_is_moved_as_before():
    x = torch.arange(6.0)
    assert to_device(x, "cpu") is x and to_device(x, torch.device("cpu")) is x
    assert to_device(x, "meta").device.type == "meta"


def test_a_host_tensor_bound_for_cuda_is_pinned_then_copied_without_blocking(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    real_to = torch.Tensor.to

    def fake_to(self, *args, **kwargs):
        if args and torch.device(args[0]).type == "cuda":
            calls.append(("to", str(args[0]), kwargs.get("non_blocking")))
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    to_device(torch.zeros(3), "cuda:0")
    assert calls == ["pin", ("to", "cuda:0", True)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_on_cuda_the_copy_arrives():
    x = torch.arange(1000.0)
    y = to_device(x, "cuda")
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)
    assert to_device(y, "cuda") is y
