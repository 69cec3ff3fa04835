"""Strict weight loading: matched / missing / unexpected keys, and a partial fit refused unless strict=False."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import relpos
from relpos.errors import RelposError
from relpos.export import export
from relpos.weights import compare_state, load_weights

TINY = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "pretext.n_pairs=4", "train.batch_size=2",
        "train.progress=false", "train.tensorboard=false", "train.steps=1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("strict") / "run"
    config = relpos.resolve_config(modality="image", pretext="part", overrides=[*TINY, f"out={out}"])
    relpos.train(config, data=np.random.default_rng(0).integers(0, 256, size=(6, 16, 16), dtype=np.uint8))
    return out


@pytest.fixture
def encoder(tiny_run):
    return relpos.load_encoder(tiny_run).encoder


def test_a_state_dict_matching_none_of_the_weights_is_refused_even_without_strict(encoder):
    own = encoder.state_dict()
    before = {k: v.clone() for k, v in own.items()}
    prefixed = {f"module.{k}": v + 1 for k, v in own.items()}  # a DataParallel prefix: 0 of N names match
    for strict in (True, False):
        with pytest.raises(RelposError) as info:
            load_weights(encoder, prefixed, "The file 'w.pt'", strict=strict)
        message = str(info.value)
        assert message.startswith(f"The file 'w.pt' fills none of the encoder's {len(own)} weights (matched 0 of {len(own)}")
        assert "nothing would be loaded" in message and "\n" not in message
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # nothing changed


def test_a_partial_fit_is_refused_with_the_counts_and_names_strict_false(encoder, capsys):
    own = encoder.state_dict()
    names = list(own)
    dropped = names[:2]
    tensors = {k: v + 1.0 for k, v in own.items() if k not in dropped}
    tensors["head.extra"] = torch.zeros(3)
    report = compare_state(encoder, tensors)
    assert (len(report.matched), report.missing, report.unexpected, report.total) == (
        len(names) - 2, dropped, ["head.extra"], len(names))
    with pytest.raises(RelposError) as info:
        load_weights(encoder, tensors, "Checkpoint 'x.pt'")
    message = str(info.value)
    assert f"fits the encoder only in part (matched {len(names) - 2} of {len(names)}; missing: " in message
    assert "unexpected: 'head.extra'" in message and "pass strict=False" in message and "\n" not in message
    before = {k: v.clone() for k, v in own.items()}
    report = load_weights(encoder, tensors, "Checkpoint 'x.pt'", strict=False)
    after = encoder.state_dict()
    for name in names:  # the matched weights are the state dict's; the missing ones stay as they were
        assert torch.equal(after[name], before[name] if name in dropped else before[name] + 1.0)
    assert f"strict=False loaded matched {len(names) - 2} of {len(names)}" in capsys.readouterr().err


def test_weights_of_another_shape_are_refused_even_without_strict(encoder):
    own = encoder.state_dict()
    name = next(k for k, v in own.items() if v.ndim >= 2)
    tensors = {**own, name: torch.zeros(*[s + 1 for s in own[name].shape])}
    with pytest.raises(RelposError, match=r"other shapes .*; wrong shape: '" + name.replace(".", r"\.")):
        load_weights(encoder, tensors, "Checkpoint 'x.pt'", strict=False)


def test_load_encoder_reports_a_complete_fit_and_refuses_a_checkpoint_missing_one_weight(tiny_run, tmp_path, capsys):
    loaded = relpos.load_encoder(tiny_run)
    total = len(loaded.encoder.state_dict())
    assert loaded.load_report.complete and len(loaded.load_report.matched) == total
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    path = copy / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    gone = next(k for k in state["model"] if k.startswith("encoder."))
    del state["model"][gone]
    torch.save(state, path)
    with pytest.raises(RelposError, match=rf"matched {total - 1} of {total}; missing: '{gone[8:]}'\).*strict=False"):
        relpos.load_encoder(copy)
    partial = relpos.load_encoder(copy, strict=False)
    assert partial.load_report.missing == [gone[8:]] and len(partial.load_report.matched) == total - 1
    assert "relpos: warning:" in capsys.readouterr().err


def test_an_export_missing_a_weight_is_refused_unless_strict_false(tiny_run, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = export(tiny_run, out=tmp_path / "enc.safetensors").path
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    gone = sorted(tensors)[0]
    del tensors[gone]
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(RelposError, match=rf"fits the encoder only in part \(matched {len(tensors)} of {len(tensors) + 1}"):
        relpos.load_encoder(path)
    assert relpos.load_encoder(path, strict=False).load_report.missing == [gone]
