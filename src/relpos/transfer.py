"""Host-to-accelerator copies that do not make the host wait for the device.

A copy from ordinary (pageable) host memory to a CUDA device is synchronous: the host waits until
the copy is done, and the copy waits behind every kernel already queued on the stream, so each such
copy inside a training step makes the host wait for the GPU to finish its queue. From pinned
(page-locked) memory the copy is asynchronous (``non_blocking``): the host goes on queueing the step
while the copy and the kernels before it run. :func:`to_device` pins a host tensor bound for a CUDA
device first; everywhere else it is ``tensor.to(device)``. The draws a step makes on the host (boxes,
pairs, masks, views, the batch itself) reach the device through it.

PyTorch's pinned-memory allocator caches its blocks and does not hand one out again before the copy
that reads it has finished, so a tensor pinned here may be dropped at once.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``: a host tensor bound for CUDA is pinned and copied without blocking;
    anything else is ``tensor.to(device)`` (the tensor itself when it is already there)."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
