"""Checkpoints are loaded safely: nothing pickled into one runs, a malformed one is one sentence,
and checkpoints of the format written before the safe loader keep loading and resuming."""

from __future__ import annotations

import builtins
import os
import pickle
import random
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import relpos
from relpos.checkpoint import load_checkpoint, rng_state, set_rng_state
from relpos.cli import main
from relpos.errors import RelposError
from relpos.training import resume_config

#: Written with the code at commit 23da182 (before the safe format) by training on
#: :func:`old_format_images` (then as float32 0-255) for 2 steps: image modality, 16-dim encoder,
#: NumPy's random state stored as the legacy ``('MT19937', ndarray, ...)`` tuple.
OLD_FORMAT = Path(__file__).parent / "data" / "old_format_last.pt"


def old_format_images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(6, 16, 16), dtype=np.uint8)


TINY = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "pretext.n_pairs=4", "train.batch_size=2",
        "train.progress=false", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good") / "run"
    config = relpos.resolve_config(modality="image", pretext="part", overrides=[*TINY, "train.steps=1", f"out={out}"])
    relpos.train(config, data=old_format_images())
    return out


@pytest.fixture
def run_copy(good_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(good_run, out)
    return out


def good_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def error_line(capfd) -> str:
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("relpos: error: ")
    return err[0]


# -- payloads that would run code ------------------------------------------------------------------
class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class _Exec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


class _Subprocess:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return subprocess.call, (["touch", str(self.marker)],)


class _PathTouch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def _as_config(payload, state):
    return {**state, "config": payload}


def _deep_in_rng(payload, state):
    return {**state, "rng": {**state["rng"], "python": [3, payload, None]}}


def _in_model(payload, state):
    return {**state, "model": {**state["model"], "encoder.extra": payload}}


def _alone(payload, state):
    return payload


PAYLOADS = {"os.system": _System, "exec": _Exec, "subprocess.call": _Subprocess, "Path.touch": _PathTouch}
PLACES = {"config": _as_config, "rng": _deep_in_rng, "model": _in_model, "whole file": _alone}


def write_malicious(run_dir: Path, marker: Path, payload: str, place: str, how: str) -> Path:
    path = run_dir / "checkpoints" / "last.pt"
    obj = PLACES[place](PAYLOADS[payload](marker), good_state(run_dir))
    if how == "torch.save":
        torch.save(obj, path)
    else:  # a bare pickle, of protocol 2 (the one torch's safe loader speaks) and the newest
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2 if how == "pickle-2" else pickle.HIGHEST_PROTOCOL)
    return path


CASES = [
    ("os.system", "config", "torch.save"),
    ("exec", "rng", "torch.save"),
    ("subprocess.call", "model", "torch.save"),
    ("Path.touch", "whole file", "torch.save"),
    ("os.system", "whole file", "pickle-2"),
    ("exec", "config", "pickle-newest"),
]


@pytest.mark.parametrize("payload, place, how", CASES)
def test_load_encoder_refuses_code_in_a_checkpoint(run_copy, tmp_path, payload, place, how):
    marker = tmp_path / "pwned"
    path = write_malicious(run_copy, marker, payload, place, how)
    with pytest.raises(RelposError) as info:
        relpos.load_encoder(run_copy)
    message = str(info.value)
    assert message.startswith(f"Checkpoint {str(path)!r} ")
    if how == "torch.save":
        assert "was refused: it asks to load the Python object" in message
    else:
        assert "is not an archive written by torch.save" in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("payload, place, how", CASES[::2])
def test_eval_refuses_code_in_a_checkpoint(run_copy, tmp_path, capfd, payload, place, how):
    marker = tmp_path / "pwned"
    write_malicious(run_copy, marker, payload, place, how)
    assert main(["eval", str(run_copy), "--no-progress"]) == 2
    line = error_line(capfd)
    assert "was refused" in line or "not an archive written by torch.save" in line
    assert not marker.exists()


@pytest.mark.parametrize("payload, place, how", CASES[1::2])
def test_resume_refuses_code_in_a_checkpoint_and_keeps_the_run(run_copy, tmp_path, capfd, payload, place, how):
    marker = tmp_path / "pwned"
    path = write_malicious(run_copy, marker, payload, place, how)
    before = sorted(p.relative_to(run_copy) for p in run_copy.rglob("*")), path.read_bytes()
    assert main(["train", "--out", str(run_copy), "--resume", "--steps", "3", "--no-progress"]) == 2
    line = error_line(capfd)
    assert "was refused" in line or "not an archive written by torch.save" in line
    assert not marker.exists()
    assert (sorted(p.relative_to(run_copy) for p in run_copy.rglob("*")), path.read_bytes()) == before


def test_a_harmless_bare_pickle_is_refused_too(run_copy):
    path = run_copy / "checkpoints" / "last.pt"
    with open(path, "wb") as fh:
        pickle.dump({"step": 1, "config": {}}, fh)
    with pytest.raises(RelposError, match=r"is not an archive written by torch\.save"):
        load_checkpoint(path)


def test_a_truncated_checkpoint_is_one_sentence(run_copy):
    path = run_copy / "checkpoints" / "last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RelposError, match=r"cannot be read") as info:
        relpos.load_encoder(run_copy)
    assert "\n" not in str(info.value)


# -- wrong structure --------------------------------------------------------------------------------
def _without(key):
    return lambda s: {k: v for k, v in s.items() if k != key}


def _with(key, value):
    return lambda s: {**s, key: value}


STRUCTURES = [
    ("a list", lambda s: [s], "it holds a list, expected a mapping"),
    ("a string", lambda s: "weights", "it holds a str, expected a mapping"),
    ("no config", _without("config"), "its 'config' entry is missing"),
    ("config a list", _with("config", ["image", "part"]), "its 'config' entry is a list, expected a mapping"),
    ("config None", _with("config", None), "its 'config' entry is None, expected a mapping"),
    ("no model", _without("model"), "its 'model' entry is missing"),
    ("model a tensor", _with("model", torch.zeros(3)), "its 'model' entry is a Tensor, expected a mapping"),
    ("model with a number", lambda s: {**s, "model": {**s["model"], "encoder.cls_token": 1.5}},
     "its 'model' entry maps 'encoder.cls_token' to a float, expected parameter names to tensors"),
    ("no step", _without("step"), "its 'step' entry is missing"),
    ("step a string", _with("step", "2"), "its 'step' entry is a str, expected an integer"),
    ("step a bool", _with("step", True), "its 'step' entry is a bool, expected an integer"),
    ("step negative", _with("step", -1), "its 'step' entry is -1, expected a step >= 0"),
    ("no encoder", _without("encoder"), "its 'encoder' entry is missing"),
    ("data_info a list", _with("data_info", [1, 2]), "its 'data_info' entry is a list, expected a mapping"),
    ("config section a list", lambda s: {**s, "config": {**s["config"], "modality": [1]}},
     "holds a configuration this relpos cannot use"),
    ("config with an unknown key", lambda s: {**s, "config": {**s["config"], "colour": 1}},
     "holds a configuration this relpos cannot use"),
    ("encoder without its config", lambda s: {**s, "encoder": {"in_channels": 1}},
     "describes an encoder that cannot be built"),
    ("weights of another encoder", lambda s: {**s, "model": {k.replace("encoder.", "encoder.x"): v for k, v in s["model"].items()}},
     "fills none of the encoder's"),
]


@pytest.mark.parametrize("what, change, expected", STRUCTURES, ids=[s[0] for s in STRUCTURES])
def test_a_checkpoint_of_the_wrong_structure_is_one_sentence(run_copy, what, change, expected):
    path = run_copy / "checkpoints" / "last.pt"
    torch.save(change(good_state(run_copy)), path)
    with pytest.raises(RelposError) as info:
        relpos.load_encoder(run_copy)
    message = str(info.value)
    assert message.startswith(f"Checkpoint {str(path)!r} ") and expected in message, message
    assert "\n" not in message and message.endswith(".")


def test_a_checkpoint_whose_data_description_does_not_fit_its_modality_is_one_sentence(tmp_path):
    out = tmp_path / "run"
    config = relpos.resolve_config(modality="timeseries", pretext="part", overrides=[
        *TINY, "modality.sfreq=100", "modality.patch_s=0.5", "train.steps=1", f"out={out}"])
    relpos.train(config, data=np.random.default_rng(0).standard_normal((4, 2, 200)).astype(np.float32))
    path = out / "checkpoints" / "last.pt"
    state = good_state(out)
    torch.save({**state, "data_info": {**state["data_info"], "sfreq": "fast"}}, path)
    with pytest.raises(RelposError, match=r"holds a description of its training data \('data_info'\) that modality "
                                          r"'timeseries' cannot use") as info:
        relpos.load_encoder(out)
    assert "\n" not in str(info.value)


RESUME_STRUCTURES = [
    ("no optimizer", _without("optimizer"), "its 'optimizer' entry is missing"),
    ("optimizer a list", _with("optimizer", []), "its 'optimizer' entry is a list, expected a mapping"),
    ("optimizer without state", lambda s: {**s, "optimizer": {"param_groups": []}}, "its optimizer state has no 'state' entry"),
    ("no rng", _without("rng"), "its 'rng' entry is missing"),
    ("generator state a list", lambda s: {**s, "rng": {**s["rng"], "generator": [1, 2]}},
     "its random state 'generator' is a list, expected a uint8 tensor"),
    ("no numpy state", lambda s: {**s, "rng": {k: v for k, v in s["rng"].items() if k != "numpy"}},
     "its random state has no 'numpy' entry"),
    ("numpy state cut short", lambda s: {**s, "rng": {**s["rng"], "numpy": {**s["rng"]["numpy"], "key": [1, 2, 3]}}},
     "holds an optimizer or random state that cannot be restored"),
    ("numpy key out of range", lambda s: {**s, "rng": {**s["rng"], "numpy": {**s["rng"]["numpy"], "key": [-1] * 624}}},
     "holds an optimizer or random state that cannot be restored"),
    ("python state a string", lambda s: {**s, "rng": {**s["rng"], "python": "abc"}},
     "holds an optimizer or random state that cannot be restored"),
    ("optimizer of another model", lambda s: {**s, "optimizer": {**s["optimizer"], "param_groups": s["optimizer"]["param_groups"][:1]}},
     "holds an optimizer or random state that cannot be restored"),
    ("weights of a bigger model", lambda s: {**s, "model": {**s["model"], "head.extra": torch.zeros(2)}},
     "holds weights that do not fit the model its configuration builds"),
]


@pytest.mark.parametrize("what, change, expected", RESUME_STRUCTURES, ids=[s[0] for s in RESUME_STRUCTURES])
def test_resuming_a_checkpoint_of_the_wrong_structure_is_one_sentence(run_copy, what, change, expected):
    path = run_copy / "checkpoints" / "last.pt"
    torch.save(change(good_state(run_copy)), path)
    before = path.read_bytes()
    config = resume_config(run_copy)
    config.train.steps = 3
    with pytest.raises(RelposError) as info:
        relpos.train(config, resume=True, data=old_format_images())
    message = str(info.value)
    assert message.startswith(f"Checkpoint {str(path)!r} ") and expected in message, message
    assert "\n" not in message
    assert path.read_bytes() == before  # the run is left as it was


# -- the safe format --------------------------------------------------------------------------------
def test_new_checkpoints_hold_nothing_the_plain_safe_loader_refuses(good_run):
    path = good_run / "checkpoints" / "last.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    state = torch.load(path, weights_only=True)  # no allow-list at all
    assert state["step"] == 1 and state["config"]["modality"]["name"] == "image"


def test_random_states_round_trip_through_a_checkpoint(tmp_path):
    generator = torch.Generator().manual_seed(5)
    random.seed(1)
    np.random.seed(2)
    np.random.standard_normal()  # leaves a cached Gaussian (has_gauss=1), part of the state
    torch.manual_seed(3)
    path = tmp_path / "rng.pt"
    torch.save({"rng": rng_state(generator)}, path)
    expected = (torch.rand(3, generator=generator), torch.rand(3), np.random.standard_normal(3), random.random())

    for _ in range(3):  # move every stream on
        torch.rand(3, generator=generator), torch.rand(3), np.random.standard_normal(3), random.random()
    set_rng_state(torch.load(path, weights_only=True)["rng"], generator)
    again = (torch.rand(3, generator=generator), torch.rand(3), np.random.standard_normal(3), random.random())
    assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])
    assert np.array_equal(expected[2], again[2]) and expected[3] == again[3]


# -- checkpoints of the format before the safe loader ----------------------------------------------
def test_an_old_format_checkpoint_needs_exactly_the_allow_listed_numpy_types():
    # What the old format asks for: the uint32 array of NumPy's random state, nothing else.
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(OLD_FORMAT)))
    assert unsafe == {"numpy.ndarray", "numpy._core.multiarray._reconstruct", "numpy.dtype"} or unsafe == {
        "numpy.ndarray", "numpy.core.multiarray._reconstruct", "numpy.dtype"}
    state = load_checkpoint(OLD_FORMAT, resume=True)
    kind, key, pos, has_gauss, gauss = state["rng"]["numpy"]
    assert kind == "MT19937" and key.dtype == np.uint32 and key.shape == (624,) and pos == 624

    set_rng_state(state["rng"], torch.Generator())
    restored = np.random.get_state()
    assert np.array_equal(restored[1], key) and restored[2] == pos


def test_an_old_format_checkpoint_loads_and_resumes(tmp_path):
    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(OLD_FORMAT, run / "checkpoints" / "last.pt")

    encoder = relpos.load_encoder(run)
    assert encoder.step == 2 and encoder.dim == 16
    assert tuple(encoder.embed_data(old_format_images()).shape) == (6, 16)

    config = resume_config(run)
    config.train.steps = 4
    result = relpos.train(config, resume=True, data=old_format_images())
    assert result.step == 4 and np.isfinite(result.loss)
    # The checkpoint it writes is in the safe format.
    new = run / "checkpoints" / "last.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(new)) == []
    assert torch.load(new, weights_only=True)["step"] == 4
