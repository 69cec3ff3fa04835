"""The EEG first pass on several processes (``modality.n_jobs``) gives the windows of one process.

The recordings are small EDFs written here (3 channels, 128 Hz, a few minutes of noise), so each
case builds in about a second; ``cache`` is off, so every load is a first pass.
"""

from __future__ import annotations

import numpy as np
import pytest

import relpos
from relpos.config import build_dataclass
from relpos.errors import ConfigError, DataError

from relpos_modalities.eeg import build as build_module


def eeg(**options):
    cls = relpos.get_modality("eeg")
    options.setdefault("cache", False)
    options.setdefault("window_s", 10.0)
    options.setdefault("stride_s", 5.0)
    options.setdefault("patch_s", 1.0)
    options.setdefault("labels", "none")
    return cls(build_dataclass(cls.Config, options, "modality"))


def write_edf(path, seed, seconds=120, names=("Fz", "Cz", "Pz"), flat=()):
    """A 128-Hz EDF of noise in µV (the channels in ``flat`` held at 0)."""
    edfio = pytest.importorskip("edfio")
    rng = np.random.default_rng(seed)
    signals = []
    for name in names:
        values = np.zeros(seconds * 128) if name in flat else rng.standard_normal(seconds * 128) * 20
        signals.append(edfio.EdfSignal(values, sampling_frequency=128, label=name, physical_dimension="uV",
                                       physical_range=(-500, 500)))
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals).write(path)
    return path


@pytest.fixture
def replays(monkeypatch):
    """How many recordings the main process took from a worker (the others it built itself)."""
    taken = []

    def counting(*args):
        done = original(*args)
        taken.append(done)
        return done

    original = build_module.replay
    monkeypatch.setattr(build_module, "replay", counting)
    return taken


def _same(one, two):
    assert np.array_equal(one.x, two.x)  # bit for bit
    assert list(one.groups) == list(two.groups)
    assert one.info["files"] == two.info["files"]
    assert one.info["ch_names"] == two.info["ch_names"]
    assert one.info["dropped"] == two.info["dropped"]
    assert one.info["dead_channels"] == two.info["dead_channels"]


def test_three_recordings_on_two_processes_give_the_windows_of_one(tmp_path, replays):
    folder = tmp_path / "edfs"
    for i, seconds in enumerate((120, 95, 150)):
        write_edf(folder / f"rec{i}.edf", seed=i, seconds=seconds)
    serial = eeg(n_jobs=1).load(folder)
    assert replays == []  # n_jobs 1: no worker at all
    parallel = eeg(n_jobs=2).load(folder)
    assert replays == [True, True, True]  # every recording came from a worker
    # 10-s windows every 5 s: 23 + 18 + 29 windows of 3 channels x 1,000 samples at 100 Hz
    assert parallel.x.shape == (23 + 18 + 29, 3, 1000)
    _same(serial, parallel)


def test_a_dead_channel_in_a_later_recording_starts_again_and_still_matches(tmp_path, replays):
    folder = tmp_path / "edfs"
    write_edf(folder / "a.edf", seed=0)
    write_edf(folder / "b.edf", seed=1, flat=("Cz",))  # Cz dead here: left out of every recording
    write_edf(folder / "c.edf", seed=2)
    serial = eeg(n_jobs=1).load(folder)
    parallel = eeg(n_jobs=2).load(folder)  # two workers even on a one-core machine
    assert serial.info["dead_channels"] == ["Cz"]
    assert parallel.x.shape[1] == 2
    _same(serial, parallel)
    # the first build stops at b.edf (its worker assumed no dead channel, so b is built again here);
    # the second one, with Cz left out from the start, takes every recording from the workers
    assert replays[-3:] == [True, True, True]


def test_an_error_in_a_recording_is_the_same_sentence(tmp_path):
    folder = tmp_path / "edfs"
    write_edf(folder / "a.edf", seed=0)
    write_edf(folder / "b.edf", seed=1, names=("Fz", "Cz", "Oz"))
    messages = []
    for jobs in (1, 2):
        with pytest.raises(DataError) as error:
            eeg(n_jobs=jobs).load(folder)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert "have different channels (only in the first: Pz; only in the second: Oz)" in messages[0]
    assert "\n" not in messages[0]


def test_n_jobs_zero_is_refused_in_one_sentence():
    cls = relpos.get_modality("eeg")
    with pytest.raises(ConfigError) as error:
        build_dataclass(cls.Config, {"n_jobs": 0}, "modality").validate()
    assert str(error.value) == (
        "Invalid value for 'modality.n_jobs': got 0; allowed values are -1 (one process per CPU core) or a "
        "number of processes from 1 (1: one recording after the other)."
    )


def test_n_jobs_is_not_part_of_the_cache_key():
    from relpos_modalities.eeg.pipeline import params_of

    cls = relpos.get_modality("eeg")
    one, many = (build_dataclass(cls.Config, {"n_jobs": n}, "modality") for n in (1, -1))
    assert params_of(one) == params_of(many) and "n_jobs" not in params_of(one)


@pytest.mark.parametrize("stride_s, sent", [(10.0, "_Normalised"), (2.0, "RecordingWindows")])
def test_a_worker_sends_the_smaller_of_its_samples_and_its_normalised_windows(tmp_path, monkeypatch, stride_s, sent):
    # 120 s at 100 Hz, 3 channels: 288 kB of float64 samples. 10-s windows every 10 s: 12 windows,
    # 144 kB of float32; every 2 s: 56 windows, 672 kB, so the samples go back instead.
    folder = tmp_path / "edfs"
    for i in range(3):
        write_edf(folder / f"rec{i}.edf", seed=i, seconds=120)
    kinds = []
    original = build_module.replay

    def watching(build, writer, item, state, index, prepared):
        kinds.append(type(prepared.appended[2]).__name__)
        return original(build, writer, item, state, index, prepared)

    monkeypatch.setattr(build_module, "replay", watching)
    serial = eeg(n_jobs=1, stride_s=stride_s).load(folder)
    parallel = eeg(n_jobs=2, stride_s=stride_s).load(folder)
    assert kinds == [sent] * 3
    assert parallel.x.shape == (3 * (12 if stride_s == 10.0 else 56), 3, 1000)
    _same(serial, parallel)
