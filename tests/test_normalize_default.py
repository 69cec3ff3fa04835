"""``modality.normalize: auto``, the default of eeg and timeseries: ``recording`` for continuous
recordings, ``instance`` for trials, said once at load and by ``relpos data inspect``, kept by a run
so that ``load_encoder(run).open(other_data)`` normalises as the run was trained."""

from __future__ import annotations

import numpy as np
import pytest

import relpos
from relpos.cli import main
from relpos.errors import ConfigError
from relpos.training import build_modality
from relpos_modalities.eeg import EEGConfig, EEGModality
from relpos_modalities.timeseries import TimeseriesConfig, TimeseriesModality

pytestmark = pytest.mark.usefixtures("one_thread")

CONTINUOUS_LINE = (
    "relpos: modality.normalize = auto: recording (a continuous recording: each recording scaled by its own "
    "robust statistics, keeping the windows' differences in power; set modality.normalize to choose)\n"
)
TRIALS_LINE = (
    "relpos: modality.normalize = auto: instance (trials: each window scaled by its own mean and standard "
    "deviation, keeping their shape only; set modality.normalize to choose)\n"
)


def load(modality: str, path, *overrides: str) -> relpos.Windows:
    config = relpos.resolve_config(modality=modality, overrides=list(overrides))
    return build_modality(config).load(str(path))


def series(path, normalize: str | None = None) -> relpos.Windows:
    extra = [f"modality.normalize={normalize}"] if normalize else []
    return load("timeseries", path, "modality.sfreq=100", "modality.window_s=1", *extra)


def loud_then_quiet_recording(path) -> np.ndarray:
    """One (channels, time) recording, 2 × 800 samples at 100 Hz: 4 s quiet, then 4 s five times louder."""
    x = np.random.default_rng(5).standard_normal((2, 800))
    x[:, 400:] *= 5.0
    x[1] += 3.0
    np.save(path, x.astype(np.float32))
    return x.astype(np.float32).astype(np.float64)


def trial_archive(path) -> np.ndarray:
    """X_train of 2 trials × 2 channels × 300 samples at 100 Hz; trial 1 = 10 × trial 0 + 7."""
    first = np.random.default_rng(6).standard_normal((2, 300))
    train = np.stack([first, first * 10 + 7]).astype(np.float32)
    np.savez(path, X_train=train, y_train=np.array([0, 1]), X_test=train[::-1], y_test=np.array([1, 0]),
             sfreq=np.array(100.0))
    return train.astype(np.float64)


# -- what auto chooses --------------------------------------------------------------------------------
def test_a_continuous_timeseries_recording_is_scaled_per_recording(tmp_path, capsys):
    path = tmp_path / "night.npy"
    data = loud_then_quiet_recording(path)
    windows = series(path)
    assert capsys.readouterr().err.count(CONTINUOUS_LINE) == 1
    assert windows.info["normalize"] == "recording"
    # By hand: one median and MAD × 1.4826 per channel over the 8 s, the windows 1 s each.
    centre = np.median(data, axis=1, keepdims=True)
    scale = 1.4826 * np.median(np.abs(data - centre), axis=1, keepdims=True)
    expected = ((data - centre) / scale).reshape(2, 8, 100).transpose(1, 0, 2)
    np.testing.assert_allclose(windows.x.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(windows.x.numpy(), series(path, "recording").x.numpy())
    assert capsys.readouterr().err == ""  # chosen explicitly: nothing to say
    # The loud half stays about five times louder (instance normalisation makes every window std 1).
    loudness = windows.x.numpy().std(axis=(1, 2))
    assert 4.0 < loudness[4:].mean() / loudness[:4].mean() < 6.0


def test_a_timeseries_trial_archive_keeps_instance_normalisation(tmp_path, capsys):
    path = tmp_path / "trials.npz"
    train = trial_archive(path)
    windows = series(path)
    assert capsys.readouterr().err.count(TRIALS_LINE) == 1
    assert windows.info["normalize"] == "instance"
    np.testing.assert_array_equal(windows.x.numpy(), series(path, "instance").x.numpy())
    # By hand: window 0 is samples 0-99 of trial 0, each channel to mean 0 and std 1.
    first = train[0, :, :100]
    expected = (first - first.mean(-1, keepdims=True)) / first.std(-1, keepdims=True)
    np.testing.assert_allclose(windows.x.numpy()[0], expected, rtol=1e-4, atol=1e-5)


def test_an_eeg_recording_is_scaled_per_recording_and_npz_trials_per_window(make_recording, tmp_path, capsys):
    path = make_recording(12.0)
    cut = ("modality.window_s=2", "modality.stride_s=2", "modality.labels=none")
    auto = load("eeg", path, *cut)
    assert capsys.readouterr().err.count(CONTINUOUS_LINE) == 1
    assert auto.info["normalize"] == "recording"
    np.testing.assert_array_equal(auto.x.numpy(), load("eeg", path, *cut, "modality.normalize=recording").x.numpy())
    # Six non-overlapping windows cover the 12 s once: over them each channel has median 0, MAD × 1.4826 = 1.
    samples = auto.x.numpy().astype(np.float64).transpose(1, 0, 2).reshape(auto.channels, -1)
    np.testing.assert_allclose(np.median(samples, axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(1.4826 * np.median(np.abs(samples), axis=1), 1.0, rtol=1e-4)
    # The same recording as an mne.io.Raw object is a continuous recording too.
    import mne

    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    capsys.readouterr()
    config = relpos.resolve_config(modality="eeg", overrides=list(cut))
    from_raw = build_modality(config).load(raw)
    assert capsys.readouterr().err.count(CONTINUOUS_LINE) == 1 and from_raw.info["normalize"] == "recording"
    np.testing.assert_array_equal(from_raw.x.numpy(), auto.x.numpy())

    trials = tmp_path / "eeg_trials.npz"
    rng = np.random.default_rng(7)
    np.savez(trials, X_train=(20 * rng.standard_normal((2, 2, 400))).astype(np.float32), y_train=np.array([0, 1]),
             sfreq=np.array(100.0), ch_names=np.array(["Cz", "Pz"]))
    short = ("modality.window_s=1", "modality.stride_s=1", "modality.patch_s=0.25")
    capsys.readouterr()
    auto = load("eeg", trials, *short)
    assert capsys.readouterr().err.count(TRIALS_LINE) == 1
    assert auto.info["normalize"] == "instance"
    np.testing.assert_array_equal(auto.x.numpy(), load("eeg", trials, *short, "modality.normalize=instance").x.numpy())
    np.testing.assert_allclose(auto.x.numpy().std(axis=-1), 1.0, rtol=1e-4)


def test_explicit_choices_are_used_as_given(make_recording, capsys):
    path = make_recording(12.0)
    windows = load("eeg", path, "modality.window_s=2", "modality.stride_s=2", "modality.labels=none",
                   "modality.normalize=instance")
    assert capsys.readouterr().err == "" and windows.info["normalize"] == "instance"
    np.testing.assert_allclose(windows.x.numpy().std(axis=-1), 1.0, rtol=1e-4)  # each window its own
    assert EEGConfig().normalize == "auto" and TimeseriesConfig().normalize == "auto"
    with pytest.raises(ConfigError, match=r"'modality.normalize': allowed 'auto', 'instance', 'recording' or 'file', "
                                          r"got 'none'"):
        relpos.resolve_config(modality="eeg", overrides=["modality.normalize=none"])


# -- what relpos data inspect shows -----------------------------------------------------------------------
def test_data_inspect_says_what_auto_chose(tmp_path, capsys):
    night, trials = tmp_path / "night.npy", tmp_path / "trials.npz"
    loud_then_quiet_recording(night)
    trial_archive(trials)
    shown = {}
    for name, path, extra in ((night, night, []), (trials, trials, []), ("set", night, ["modality.normalize=file"])):
        args = ["--set", "modality.sfreq=100", "--set", "modality.window_s=1"]
        for override in extra:
            args += ["--set", override]
        assert main(["data", "inspect", str(path), "--modality", "timeseries", *args]) == 0
        out, err = capsys.readouterr()
        assert "modality.normalize = auto" not in err  # the report says it instead
        shown[name] = [line for line in out.splitlines() if line.startswith("Normalisation:")]
    assert shown[night] == ["Normalisation: recording (auto: continuous recording)"]
    assert shown[trials] == ["Normalisation: instance (auto: trials)"]
    assert shown["set"] == ["Normalisation: file"]


def test_eeg_data_inspect_of_the_bundled_recording(capsys):
    assert main(["data", "inspect", "--modality", "eeg"]) == 0
    assert "Normalisation: recording (auto: continuous recording)\n" in capsys.readouterr().out


# -- a run keeps what it was trained with -------------------------------------------------------------------
def test_a_run_trained_with_auto_opens_other_data_as_it_was_trained(tmp_path):
    night, trials = tmp_path / "night.npy", tmp_path / "trials.npz"
    loud_then_quiet_recording(night)
    trial_archive(trials)
    out = tmp_path / "run"
    assert main([
        "train", "--modality", "timeseries", "--pretext", "part", "--data", str(night), "--out", str(out),
        "--steps", "2", "--no-progress", "--set", "modality.sfreq=100", "--set", "modality.window_s=1",
        "--set", "modality.patch_s=0.1", "--set", "encoder.dim=8", "--set", "encoder.depth=1",
        "--set", "encoder.heads=1", "--set", "pretext.n_pairs=4", "--set", "train.batch_size=2",
    ]) == 0
    pretrained = relpos.load_encoder(out)
    assert pretrained.config.modality_config.normalize == "auto"  # as the user left it ...
    assert pretrained.modality.config.normalize == "recording"  # ... and what it meant for the night
    # The trials are scaled per recording like the night (each trial its own), not per window as
    # auto would choose for trials: trial 1 = 10 × trial 0 + 7 becomes the same windows as trial 0.
    opened = pretrained.open(str(trials)).x.numpy()
    np.testing.assert_array_equal(opened, series(trials, "recording").x.numpy())
    assert not np.allclose(opened, series(trials, "instance").x.numpy(), atol=1e-2)


def test_restore_keeps_an_explicit_choice_and_refuses_an_unknown_one():
    # A run made before auto existed says instance in its config and nothing in its data_info.
    explicit = (EEGModality(EEGConfig(normalize="instance")),
                TimeseriesModality(TimeseriesConfig(normalize="instance")))
    for modality in explicit:
        modality.restore({"normalize": "recording"})
        assert modality.config.normalize == "instance"
    old = EEGModality()
    old.restore({"sfreq": 100.0})
    assert old.config.normalize == "auto"
    with pytest.raises(ConfigError, match=r"'modality.normalize': allowed .* got 'zscore'"):
        EEGModality().restore({"normalize": "zscore"})
