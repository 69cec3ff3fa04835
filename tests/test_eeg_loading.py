"""The eeg modality's inputs, channels, preprocessing, windows, labels and bad segments.

Recordings are written by the tests themselves (small FIF files from ``mne.io.RawArray``) so every
expected count can be worked out by hand; the real shared data (SCP1, Blink) is used where present.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import EEG_SAMPLE

import relpos
from relpos.config import build_dataclass
from relpos.errors import ConfigError, DataError


def eeg(**options):
    """An eeg modality with ``options`` (coerced like YAML/--set values), cache off unless asked."""
    cls = relpos.get_modality("eeg")
    options.setdefault("cache", False)
    return cls(build_dataclass(cls.Config, options, "modality"))


def write_fif(path, seconds=60.0, sfreq=100.0, channels=("C3", "C4"), seed=0, annotations=(), data=None):
    """A recording of white noise (20 µV rms) saved as FIF; ``annotations``: (onset, duration, desc)."""
    import mne

    n = int(round(seconds * sfreq))
    if data is None:
        data = np.random.default_rng(seed).standard_normal((len(channels), n)) * 20e-6
    raw = mne.io.RawArray(data, mne.create_info(list(channels), sfreq, "eeg"), verbose="error")
    if annotations:
        onset, duration, desc = zip(*annotations)
        raw.set_annotations(mne.Annotations(onset, duration, desc))
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, overwrite=True, verbose="error")
    return path


# -- inputs ------------------------------------------------------------------------------------
def test_bundled_sample_keeps_its_seven_windows():
    windows = eeg(normalize="instance").load(None)  # pinned: the mean and std below are per window
    # 61.0 s at 100 Hz = 6100 samples; 30-s windows every 5 s: starts 0, 5, ..., 30 s -> 7 windows.
    assert tuple(windows.x.shape) == (7, 64, 3000)
    assert set(windows.groups) == {"eegmmidb_S001R02"}
    assert set(windows.subjects) == {"001"}  # EEGMMIDB "S001R02" -> subject "001"
    assert windows.labels is None
    x = windows.x.double()
    assert torch.allclose(x.mean(-1), torch.zeros(7, 64, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(-1, unbiased=False), torch.ones(7, 64, dtype=torch.float64), atol=1e-4)


def test_folder_glob_and_list_file_find_the_same_recordings(tmp_path):
    for name in ("a/rec1_raw.fif", "a/b/rec2_raw.fif", "c/rec3_raw.fif"):
        write_fif(tmp_path / "data" / name, seconds=40.0, seed=len(name))
    (tmp_path / "data" / "notes.txt").write_text("not a recording")
    listing = tmp_path / "lists" / "files.txt"
    listing.parent.mkdir()
    listing.write_text("# two of them\n../data/a/rec1_raw.fif\n\n../data/c/rec3_raw.fif  # the third\n")
    modality = eeg(stride_s=10)
    by_folder = modality.load(tmp_path / "data")
    by_glob = modality.load(str(tmp_path / "data" / "**" / "*.fif"))
    by_list = modality.load(listing)
    # 40 s, 30-s windows every 10 s: starts 0 and 10 -> 2 windows per recording.
    assert sorted(set(by_folder.groups)) == ["rec1_raw", "rec2_raw", "rec3_raw"]
    assert len(by_folder) == len(by_glob) == 6
    assert torch.equal(by_folder.x, by_glob.x)
    assert list(dict.fromkeys(by_list.groups)) == ["rec1_raw", "rec3_raw"]
    assert len(by_list) == 4


def test_list_file_naming_a_missing_file_is_an_error(tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text("nope.edf\n")
    with pytest.raises(DataError, match=r"nope.edf.*line 1 of list file"):
        eeg().load(listing)


def test_glob_without_matches_is_an_error(tmp_path):
    with pytest.raises(DataError, match="matches no recordings"):
        eeg().load(str(tmp_path / "*.edf"))


def test_raw_objects_from_python(tmp_path):
    import mne

    path = write_fif(tmp_path / "r_raw.fif", seconds=35.0)
    raw = mne.io.read_raw(path, preload=True, verbose="error")
    single = eeg().load(raw)
    both = eeg().load([raw, raw.copy()])
    # 35 s: one 30-s window (starts 0, 5 s) -> 2 windows per Raw.
    assert len(single) == 2 and len(both) == 4
    assert torch.equal(both.x[:2], single.x)
    assert single.info["cache"]["hit"] is False and single.info["cache"]["path"] is None
    assert raw.info["sfreq"] == 100.0 and len(raw.ch_names) == 2  # the caller's Raw is untouched


# -- channels ----------------------------------------------------------------------------------
def test_channels_by_name_and_pattern_on_the_real_sample():
    windows = eeg(channels="C3..,C4..", cache=False).load(EEG_SAMPLE)
    assert windows.channels == 2 and windows.info["ch_names"] == ["C3..", "C4.."]
    pattern = eeg(channels="Fc*").load(EEG_SAMPLE)
    assert pattern.info["ch_names"] == ["Fc5.", "Fc3.", "Fc1.", "Fcz.", "Fc2.", "Fc4.", "Fc6."]
    standard = eeg(channels="C3,Cz", standardize_names=True).load(EEG_SAMPLE)
    assert standard.info["ch_names"] == ["C3", "Cz"]
    assert torch.equal(standard.x[:, 0], windows.x[:, 0])


def test_missing_channel_lists_the_available_ones(tmp_path):
    path = write_fif(tmp_path / "r_raw.fif", seconds=30.0, channels=("Fz", "Cz"))
    with pytest.raises(DataError, match=r"no channel matching 'Pz'.*Fz, Cz"):
        eeg(channels="Cz,Pz").load(path)


def test_different_channel_sets_need_channels_common(tmp_path):
    write_fif(tmp_path / "d" / "a_raw.fif", seconds=30.0, channels=("Fz", "Cz", "Pz"))
    write_fif(tmp_path / "d" / "b_raw.fif", seconds=30.0, channels=("Cz", "Fz", "Oz"))
    with pytest.raises(DataError) as info:
        eeg().load(tmp_path / "d")
    message = str(info.value)
    assert "a_raw.fif" in message and "b_raw.fif" in message and "'common'" in message
    windows = eeg(channels="common").load(tmp_path / "d")
    assert windows.info["ch_names"] == ["Fz", "Cz"]  # the first recording's order
    assert tuple(windows.x.shape) == (2, 2, 3000)


def test_mixed_sampling_rates_are_resampled_to_the_target(tmp_path):
    write_fif(tmp_path / "d" / "a_raw.fif", seconds=30.0, sfreq=100.0)
    write_fif(tmp_path / "d" / "b_raw.fif", seconds=30.0, sfreq=256.0)
    windows = eeg().load(tmp_path / "d")
    assert tuple(windows.x.shape) == (2, 2, 3000)
    assert [f["sfreq"] for f in windows.info["files"]] == [100.0, 256.0]


def test_rate_below_twice_the_high_edge_is_an_error(tmp_path):
    path = write_fif(tmp_path / "r_raw.fif", seconds=30.0, sfreq=50.0)
    with pytest.raises(DataError, match=r"50.0 Hz.*30.0 Hz"):
        eeg().load(path)


# -- preprocessing ----------------------------------------------------------------------------
def _amplitude(x: np.ndarray, sfreq: float, freq: float) -> float:
    spectrum = np.abs(np.fft.rfft(x, axis=-1))
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / sfreq)
    return float(spectrum[..., np.argmin(np.abs(freqs - freq))].mean())


def test_notch_removes_mains_and_its_harmonics(tmp_path):
    t = np.arange(int(40 * 500)) / 500.0
    signal = 10e-6 * np.sin(2 * np.pi * 10 * t) + 10e-6 * np.sin(2 * np.pi * 50 * t) + 10e-6 * np.sin(2 * np.pi * 100 * t)
    path = write_fif(tmp_path / "r_raw.fif", sfreq=500.0, channels=("Cz",), data=signal[None])
    options = dict(h_freq=120.0, sfreq=250.0, stride_s=10)
    plain = eeg(**options).load(path).x.numpy()
    notched = eeg(notch_freq=50, **options).load(path).x.numpy()
    for freq in (50, 100):  # 50 Hz and its harmonic below the 250-Hz Nyquist
        assert _amplitude(notched, 250, freq) < 0.05 * _amplitude(plain, 250, freq)
    assert _amplitude(notched, 250, 10) > 0.9 * _amplitude(plain, 250, 10)


def test_reference_to_a_channel_subtracts_it(tmp_path):
    t = np.arange(3000) / 100.0
    noise = np.random.default_rng(1).standard_normal(3000) * 30e-6
    sine = 10e-6 * np.sin(2 * np.pi * 5 * t)
    path = write_fif(tmp_path / "r_raw.fif", channels=("Cz", "M1"), data=np.stack([sine + noise, noise]))
    ref = eeg(reference="M1", channels="Cz").load(path).x[0, 0].numpy()
    kept = eeg(channels="Cz").load(path).x[0, 0].numpy()
    z = (sine - sine.mean()) / sine.std()
    assert np.corrcoef(ref, z)[0, 1] > 0.99  # Cz - M1 is the 5-Hz sine
    assert np.corrcoef(kept, z)[0, 1] < 0.6
    average = eeg(reference="average").load(path)
    # With two channels the average reference makes them mirror images: Cz' = -M1' = sine / 2.
    assert torch.allclose(average.x[:, 0], -average.x[:, 1], atol=1e-4)
    with pytest.raises(DataError, match=r"no reference channel 'M2'.*Cz, M1"):
        eeg(reference="M2").load(path)


# -- windows and labels -------------------------------------------------------------------------
ANNOTATED = [(0.0, 20.0, "rest"), (20.0, 40.0, "task"), (60.0, 10.0, "BAD_blink"), (45.0, 0.0, "cue")]


def test_fixed_windows_take_the_label_at_their_centre(tmp_path):
    path = write_fif(tmp_path / "r_raw.fif", seconds=70.0, annotations=ANNOTATED)
    windows = eeg(window_s=10, stride_s=10, labels="annotations", label_map={"rest": "R", "task": "T"}).load(path)
    # Starts 0..60 s; centres 5, 15 (rest), 25, 35, 45, 55 (task), 65 (BAD_blink: unmapped, dropped).
    assert windows.class_names == ["R", "T"]
    assert windows.labels.tolist() == [0, 0, 1, 1, 1, 1]
    assert windows.info["dropped"] == {"no label": 1}
    assert windows.info["unlabelled"] == {"BAD_blink": 1}


def test_event_windows_start_at_each_mapped_annotation(tmp_path):
    path = write_fif(tmp_path / "r_raw.fif", seconds=70.0, annotations=ANNOTATED)
    windows = eeg(windows="events", window_s=4, event_offset_s=-1, labels="annotations",
                  label_map={"cue": "cue", "task": "task", "rest": "rest"}).load(path)
    # rest at 0 s -> starts at -1 s: outside; task 20 -> 19 s; cue 45 -> 44 s.
    assert windows.class_names == ["cue", "task", "rest"]
    assert windows.labels.tolist() == [1, 0]
    assert windows.info["dropped"] == {"event window outside the recording": 1}


def test_identity_labels_when_no_mapping_is_given(tmp_path):
    path = write_fif(tmp_path / "r_raw.fif", seconds=40.0, annotations=[(0.0, 20.0, "a"), (20.0, 20.0, "b")])
    windows = eeg(window_s=10, stride_s=10, labels="annotations").load(path)
    assert windows.class_names == ["a", "b"] and windows.labels.tolist() == [0, 0, 1, 1]


def test_mapping_that_matches_nothing_lists_the_descriptions(tmp_path):
    path = write_fif(tmp_path / "r_raw.fif", seconds=70.0, annotations=ANNOTATED)
    with pytest.raises(DataError, match=r"matches none.*'BAD_blink', 'cue', 'rest', 'task'"):
        eeg(labels="annotations", label_map={"T1": "left"}).load(path)


def test_nan_and_flat_windows_are_dropped_counted_and_reported(tmp_path, capsys):
    data = np.random.default_rng(2).standard_normal((2, 6000)) * 20e-6
    data[0, 1500] = np.nan  # t = 15 s: inside the window starting at 10 s
    data[1, 4000:6000] = 3e-6  # channel 2 constant from 40 s to 60 s
    path = write_fif(tmp_path / "r_raw.fif", data=data)
    windows = eeg(window_s=10, stride_s=10).load(path)
    # Starts 0, 10, 20, 30, 40, 50 s: 10 has a NaN; 40 and 50 are flat on channel 2; 0, 20, 30 stay.
    assert len(windows) == 3 and torch.isfinite(windows.x).all()
    # Channel C4 goes flat only in part of the recording: it is live, so its flat windows are dropped
    # (named), and the channel stays.
    assert windows.info["dropped"] == {"non-finite values": 1, "flat channel 'C4'": 2}
    assert windows.info["ch_names"] == ["C3", "C4"] and windows.info["dead_channels"] == []
    err = capsys.readouterr().err
    assert "relpos: warning: Dropped 3 of 6 windows" in err and "1 non-finite values, 2 flat channel 'C4'" in err


def test_corrupt_file_among_good_ones_is_skipped_with_a_warning(tmp_path, capsys):
    write_fif(tmp_path / "d" / "good_raw.fif", seconds=30.0)
    (tmp_path / "d" / "broken.edf").write_bytes(np.random.default_rng(0).bytes(3000))
    short = write_fif(tmp_path / "d" / "short_raw.fif", seconds=12.0)
    windows = eeg().load(tmp_path / "d")
    assert set(windows.groups) == {"good_raw"}
    err = capsys.readouterr().err
    assert "broken.edf" in err and "cannot be read with MNE" in err
    assert "short_raw.fif" in err and "12.0 s, shorter than one window (30.0 s)" in err
    reasons = {s["path"].split("/")[-1]: s["reason"] for s in windows.info["skipped"]}
    assert set(reasons) == {"broken.edf", "short_raw.fif"}
    (tmp_path / "d" / "good_raw.fif").unlink()
    with pytest.raises(DataError, match="No usable recording"):
        eeg().load(tmp_path / "d")
    with pytest.raises(DataError, match=r"lasts 12.0 s.*30.0 s"):
        eeg().load(short)


def test_truncated_edf_is_reported_and_too_short_to_use(tmp_path, capsys):
    mne = pytest.importorskip("mne")
    pytest.importorskip("edfio")
    good = write_fif(tmp_path / "good_raw.fif", seconds=40.0)
    raw = mne.io.read_raw(good, preload=True, verbose="error")
    folder = tmp_path / "d"
    folder.mkdir()
    mne.export.export_raw(folder / "a.edf", raw, fmt="edf", verbose="error")
    mne.export.export_raw(folder / "b.edf", raw, fmt="edf", verbose="error")
    data = (folder / "b.edf").read_bytes()
    (folder / "b.edf").write_bytes(data[: len(data) // 4])
    windows = eeg(stride_s=10).load(folder)
    # a.edf: 40 s -> windows at 0 and 10 s. b.edf keeps under a quarter of its 40 s: too short.
    assert list(windows.groups) == ["a", "a"]
    err = capsys.readouterr().err
    # The header still declares the whole file; the message compares that with what is left.
    assert f"b.edf' is truncated: its header declares {len(data):,} bytes" in err
    assert f"but the file has {len(data) // 4:,} bytes; reading the" in err
    assert re.search(r"b.edf': it lasts \d+\.\d s, shorter than one window \(30.0 s\)", err)


def test_inspect_reports_files_annotations_windows_and_drops(tmp_path):
    path = write_fif(tmp_path / "S007R01_raw.fif", seconds=70.0, annotations=ANNOTATED)
    report = eeg(window_s=10, stride_s=10, labels="annotations", label_map={"rest": "R", "task": "T"}).inspect(path)
    assert report["n_windows"] == 6 and report["label_counts"] == {"R": 2, "T": 4}
    assert report["dropped"] == {"no label": 1} and report["unlabelled"] == {"BAD_blink": 1}
    (entry,) = report["files"]
    assert entry["channels"] == ["C3", "C4"] and entry["sfreq"] == 100.0 and entry["duration_s"] == 70.0
    assert entry["annotations"] == {"rest": 1, "task": 1, "BAD_blink": 1, "cue": 1}
    assert entry["n_windows"] == 6 and entry["subject"] == "007"


def test_subject_pattern_is_configurable(tmp_path):
    path = write_fif(tmp_path / "sub-12_ses-1_raw.fif", seconds=30.0)
    assert set(eeg(subject_pattern=r"sub-(\d+)").load(path).subjects) == {"12"}
    assert set(eeg().load(path).subjects) == {"sub-12_ses-1_raw"}  # no built-in match: the recording id
    with pytest.raises(ConfigError, match="subject_pattern"):
        eeg(subject_pattern="(").load(path)


def test_bad_option_values_are_config_errors():
    with pytest.raises(ConfigError, match=r"'modality.windows'.*'sliding'"):
        eeg(windows="sliding")
    with pytest.raises(ConfigError, match=r"'modality.labels'"):
        eeg(labels="stages")


# -- EEG trials in .npz ---------------------------------------------------------------------------
def test_npz_trials_of_the_shared_scp1_and_blink(shared_data):
    scp1 = eeg(window_s=3.5, stride_s=3.5, patch_s=0.25, l_freq=0).load(shared_data / "eeg" / "scp1.npz")
    # 268 training trials of 3.5 s: 896 samples at 256 Hz -> 350 at 100 Hz; one window each.
    assert tuple(scp1.x.shape) == (268, 1, 350)
    assert scp1.class_names == ["negativity", "positivity"] and scp1.labels.bincount().tolist() == [135, 133]
    assert len(set(scp1.groups)) == 268
    blink = eeg(window_s=2, stride_s=2, patch_s=0.2, l_freq=0, split="all").load(shared_data / "eeg" / "blink.npz")
    raw = np.load(shared_data / "eeg" / "blink.npz")
    x = np.concatenate([raw["X_train"], raw["X_test"]])
    n_flat = int((np.ptp(x, axis=2) == 0).any(axis=1).sum())  # trials with a constant channel
    assert n_flat > 0 and len(blink) == 850 - n_flat
    # Checked by hand: 7 trials have ch3 constant, 2 have ch2 constant; the reasons name them.
    assert n_flat == 9 and blink.info["dropped"] == {"flat channel 'ch3'": 7, "flat channel 'ch2'": 2}
    assert tuple(blink.x.shape[1:]) == (4, 200)


def test_npz_trials_written_by_the_test(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", X_train=rng.standard_normal((5, 2, 400)).astype(np.float32) * 20,
             y_train=np.array([0, 1, 1, 0, 1]), class_names=np.array(["a", "b"]), sfreq=np.array(200.0),
             ch_names=np.array(["Cz", "Pz"]))
    windows = eeg(window_s=1, stride_s=0.5, patch_s=0.25, l_freq=0, channels="Pz").load(tmp_path / "t.npz")
    # 2 s at 200 Hz -> 200 samples at 100 Hz; 1-s windows every 0.5 s: 3 per trial, 15 in all.
    assert tuple(windows.x.shape) == (15, 1, 100)
    assert windows.labels.tolist() == [0] * 3 + [1] * 6 + [0] * 3 + [1] * 3
    with pytest.raises(DataError, match=r"no 'X_test'"):
        eeg(split="test", window_s=1, patch_s=0.25).load(tmp_path / "t.npz")
    with pytest.raises(DataError, match=r"2.00 s, shorter than one window"):
        eeg(window_s=3, patch_s=0.25).load(tmp_path / "t.npz")


def test_scp1_config_trains(tmp_path, shared_data, tiny, one_thread):
    from conftest import CONFIGS

    config = relpos.resolve_config(
        CONFIGS / "scp1_part.yaml",
        overrides=[*tiny, "train.steps=2", "train.progress=false", "train.tensorboard=false",
                   f"data={shared_data / 'eeg' / 'scp1.npz'}", f"out={tmp_path / 'run'}"],
    )
    result = relpos.train(config)
    assert result.step == 2 and np.isfinite(result.loss)
    blink = relpos.resolve_config(CONFIGS / "blink_part.yaml")
    assert (blink.modality_config.window_s, blink.modality_config.patch_s) == (2.0, 0.2)
