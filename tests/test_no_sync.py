"""No host–device sync inside a training step: the loop and every built-in pretext keep their numbers on
the device, and the loop reads them back once per metrics row (issue 27).

There is no GPU here, so the test watches for what would make a GPU wait for the host: any read of a
tensor's data by Python (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ``.cpu()``, ``.numpy()``)
and the operators whose output size depends on the data (``nonzero``, ``masked_select``, boolean
indexing), which a CUDA kernel can only answer by copying a count to the host. Steps 2 to N - 1 of a
real run are watched; the first step (the contract checks), the last and the flushes of the logged
values are where the loop reads on purpose.
"""

from __future__ import annotations

import dataclasses
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import relpos
import relpos.plugins
from relpos import training

from conftest import TINY_OVERRIDES

pytestmark = pytest.mark.usefixtures("one_thread")

aten = torch.ops.aten
#: Operators that read a tensor's data on the host, or whose output size depends on it.
READING_OPERATORS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
                     aten.is_nonzero.default, aten.equal.default, aten.unique_consecutive.default,
                     aten._unique2.default, aten.repeat_interleave.Tensor}
#: Indexing with a boolean mask runs ``nonzero`` beneath the dispatcher: watched by its arguments.
INDEXING_OPERATORS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}
#: Tensor methods that hand the data to Python.
READING_METHODS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "__array__"}
REPO = Path(__file__).resolve().parents[1]
#: Reads of tensors that live on the host on every device, by design: (file, code of the line, why).
ON_HOST = [
    ("src/relpos/masking.py", "seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())",
     "a seed drawn from the step's generator, a CPU torch.Generator"),
    ("src/relpos/views.py", "side = float(extent[d]) * float(fraction) ** (1.0 / n_axes)",
     "the crop fraction drawn from the step's (CPU) generator"),
    ("src/relpos/views.py", "if bool(flipped.any()):", "the views' flip flags, drawn from the step's (CPU) generator"),
    ("src/relpos/views.py", "tokens = Boxes(center, size, layout_of(tokens, x.shape[2:], patch_shape, x.dtype))",
     "the views' token boxes, computed on the host from the views drawn by the step's (CPU) generator"),
]
#: Where extraction checks boxes that carry no layout (two ``.tolist()`` of their values).
EXTRACTION = "src/relpos/extraction.py"


def _callers() -> list[str] | None:
    """``path:line: code`` of every frame in the project's own code (not this file), innermost first;
    None for a read by PyTorch's optimiser, whose step counters are CPU tensors on every device
    (``capturable`` off), or the fused CUDA kernel's own."""
    here = Path(__file__).resolve()
    stack = traceback.extract_stack()
    if any(f"torch{'/'}optim{'/'}" in frame.filename for frame in stack):
        return None
    frames = []
    for frame in reversed(stack):
        path = Path(frame.filename).resolve()
        if path != here and REPO in path.parents and ".venv" not in path.parts:
            frames.append(f"{path.relative_to(REPO)}:{frame.lineno}: {frame.line}")
    return frames or ["outside the project"]


def _on_host(where: str) -> bool:
    return any(where.startswith(f"{path}:") and f": {code}" in where for path, code, _ in ON_HOST)


class HostReads:
    """Records every host read of tensor data while ``watching`` is true."""

    def __init__(self) -> None:
        self.watching = False
        self.found: list[str] = []
        reads = self

        class Operators(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if reads.watching:
                    reading = func in READING_OPERATORS or (func in INDEXING_OPERATORS and any(
                        index is not None and index.dtype in (torch.bool, torch.uint8) for index in args[1]))
                    if reading:
                        reads.add(str(func))
                return func(*args, **(kwargs or {}))

        class Methods(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if reads.watching and getattr(func, "__name__", "") in READING_METHODS:
                    reads.add(f"Tensor.{func.__name__}")
                return func(*args, **(kwargs or {}))

        self.modes = (Methods(), Operators())

    def add(self, what: str) -> None:
        frames = _callers()
        if frames is not None and not any(_on_host(frame) for frame in frames):  # a read under a host-side call is one
            self.found.append(f"{what} at {frames[0]}")


@pytest.fixture(scope="module")
def eeg_recording(tmp_path_factory):
    """60 s of 4 EEG channels (10-s windows every 5 s: 11 windows of one recording)."""
    import mne

    sfreq, seconds = 200.0, 60.0
    rng = np.random.default_rng(0)
    t = np.arange(int(sfreq * seconds)) / sfreq
    signal = 20e-6 * np.sin(2 * np.pi * 10 * t) + 10e-6 * rng.standard_normal((4, t.size))
    raw = mne.io.RawArray(signal, mne.create_info(["C3", "C4", "O1", "O2"], sfreq, ch_types="eeg"), verbose="error")
    path = tmp_path_factory.mktemp("eeg") / "x_raw.fif"
    raw.save(path, verbose="error")
    return path


EEG = ["modality.window_s=10", "modality.stride_s=5", "modality.patch_s=1", "modality.normalize=instance"]
TINY_HEADS = ["pretext.out_dim=64", "pretext.head_hidden_dim=32", "pretext.head_bottleneck_dim=16"]
TINY_RECORDING = ["pretext.tau_pos_s=10", "pretext.tau_neg_s=15", "pretext.n_context=2", "pretext.n_predict=1",
                  "pretext.n_negatives=1"]
BUILTIN = ["part", "part-grid", "mae", "mp3", "droppos", "dino", "sove", "pw-self", "spatial-reasoning", "rp", "ts",
           "cpc"]


def tiny_config(pretext_name: str, data: Path, out: Path, extra=()):
    fields = {f.name for f in dataclasses.fields(relpos.plugins.get_pretext(pretext_name).Config)}
    overrides = [o for o in [*TINY_OVERRIDES, *TINY_HEADS, *TINY_RECORDING]
                 if not o.startswith("pretext.") or o.split("=")[0].split(".")[1] in fields]
    config = relpos.resolve_config(modality="eeg", pretext=pretext_name, overrides=[
        *overrides, *EEG, "train.steps=4", "train.log_every=100", "train.ckpt_every=100", "train.monitor_every=0",
        "train.progress=false", *extra])
    config.out, config.data = str(out), str(data)
    return config


def watched_run(config, monkeypatch) -> list[str]:
    """Train ``config``; return the host reads of steps 2 to N - 1 (from the batch on the device to the
    end of the step), leaving out the loop's flushes."""
    reads, watched = HostReads(), []
    next_batch, flush = training._Run.next_batch, training._Run.flush

    def watched_next_batch(run):
        reads.watching = False  # the batch is drawn and augmented on the host, then moved
        batch = next_batch(run)
        reads.watching = run.start + 1 < run.step < run.cfg.steps
        watched.extend([run.step] if reads.watching else [])
        return batch

    def unwatched_flush(run, *args, **kwargs):
        watching, reads.watching = reads.watching, False
        try:
            return flush(run, *args, **kwargs)
        finally:
            reads.watching = watching

    monkeypatch.setattr(training._Run, "next_batch", watched_next_batch)
    monkeypatch.setattr(training._Run, "flush", unwatched_flush)
    methods, operators = reads.modes
    with methods, operators:
        relpos.train(config)
    assert watched == list(range(2, config.train.steps))
    return reads.found


def test_the_watch_sees_every_kind_of_host_read():
    # what the step test must catch if a pretext brings one back (checked by hand too: an .item() put
    # back into MP3's accuracy fails it, naming plugins/mp3.py and the line)
    reads = HostReads()
    x = torch.tensor([1.0, -2.0, 3.0])
    methods, operators = reads.modes
    with methods, operators:
        reads.watching = True
        x.sum().item()
        float(x.mean())
        bool((x > 0).any())
        x.tolist()
        x[x > 0].sum()
        x.nonzero()
        reads.watching = False
        x.sum().item()  # not watched
    kinds = [read.split(" at ")[0] for read in reads.found]
    assert kinds == ["Tensor.item", "aten._local_scalar_dense.default", "Tensor.__float__",
                     "aten._local_scalar_dense.default", "Tensor.__bool__", "aten._local_scalar_dense.default",
                     "Tensor.tolist", "aten.index.Tensor", "aten.nonzero.default"]


@pytest.mark.parametrize("pretext_name", BUILTIN)
def test_a_training_step_never_reads_tensor_data_on_the_host(pretext_name, eeg_recording, tmp_path, monkeypatch):
    found = watched_run(tiny_config(pretext_name, eeg_recording, tmp_path / "run"), monkeypatch)
    assert found == [], "host reads inside a step:\n" + "\n".join(dict.fromkeys(found))


@pytest.mark.parametrize("axes", [1, 2])
def test_extraction_reads_the_boxes_only_when_no_sampler_vouched_for_them(axes):
    """Boxes from sample_offgrid (scale 1) and grid_boxes carry their layout on the host, so
    extract_patches chooses its road without reading them back; the same boxes made by hand are
    checked by value (two reads) and give the same patches."""
    extent, patch = ((300,), 25) if axes == 1 else ((40, 40), 16)
    x = torch.randn(3, 2, *extent)
    gen = torch.Generator().manual_seed(0)
    for boxes in (relpos.sample_offgrid(3, extent, patch, 7, gen), relpos.grid_boxes(extent, patch).expand(3)):
        assert boxes.layout is not None
        bare = relpos.Boxes(boxes.center, boxes.size)
        reads = HostReads()
        methods, operators = reads.modes
        with methods, operators:
            reads.watching = True
            vouched = relpos.extract_patches(x, boxes, patch)
            reads.watching = False
        assert reads.found == []
        with methods, operators:
            reads.watching = True
            checked = relpos.extract_patches(x, bare, patch)
            reads.watching = False
        assert len(reads.found) == 2 and all(f" at {EXTRACTION}:" in read for read in reads.found)
        assert torch.equal(vouched, checked)
