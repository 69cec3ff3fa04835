"""Sleep staging out of the box: Sleep-EDF style PSG + hypnogram pairs written by the test itself,
and ``relpos data fetch sleep-edf`` with MNE's fetcher replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import relpos
from relpos.config import build_dataclass
from relpos.errors import DataError

pytest.importorskip("edfio", reason="writing EDF files in the tests needs edfio (pip install edfio)")

#: (onset s, duration s, description) of the hypnogram: 10 epochs of 30 s over a 300-s PSG.
HYPNOGRAM = [
    (0, 60, "Sleep stage W"),  # 2 epochs -> W
    (60, 30, "Sleep stage 1"),  # N1
    (90, 60, "Sleep stage 2"),  # 2 x N2
    (150, 30, "Sleep stage 3"),  # N3
    (180, 30, "Sleep stage 4"),  # N3 (R&K stage 4 merges into N3)
    (210, 30, "Sleep stage R"),  # REM
    (240, 30, "Sleep stage ?"),  # dropped
    (270, 30, "Movement time"),  # dropped
]


def write_psg(folder: Path, psg_name: str, hyp_name: str, seconds: float = 300.0, seed: int = 0):
    """A 2-channel EEG PSG at 100 Hz (EDF+) and its hypnogram (EDF+, annotations only)."""
    import edfio
    import mne

    folder.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).standard_normal((2, int(seconds * 100))) * 20e-6
    info = mne.create_info(["EEG Fpz-Cz", "EEG Pz-Oz"], 100.0, "eeg")
    raw = mne.io.RawArray(data, info, verbose="error")
    mne.export.export_raw(folder / psg_name, raw, fmt="edf", overwrite=True, verbose="error")
    annotations = [edfio.EdfAnnotation(o, d, text) for o, d, text in HYPNOGRAM]
    edfio.Edf(signals=[], annotations=annotations).write(folder / hyp_name)
    return folder / psg_name, folder / hyp_name


def sleep_eeg(**options):
    cls = relpos.get_modality("eeg")
    values = {"labels": "sleep", "window_s": 30, "stride_s": 30, "cache": False, **options}
    return cls(build_dataclass(cls.Config, values, "modality"))


def test_sleep_edf_pair_gives_aasm_stages(tmp_path, capsys):
    psg, _ = write_psg(tmp_path / "night", "SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf")
    windows = sleep_eeg().load(tmp_path / "night")  # the folder: the hypnogram is not a recording
    assert windows.class_names == ["W", "N1", "N2", "N3", "REM"]
    # Epochs: W W N1 N2 N2 N3 N3 REM (? and movement dropped) -> 8 windows.
    assert windows.labels.tolist() == [0, 0, 1, 2, 2, 3, 3, 4]
    assert tuple(windows.x.shape) == (8, 2, 3000)
    assert windows.info["dropped"] == {"no label": 2}
    assert windows.info["unlabelled"] == {"Sleep stage ?": 1, "Movement time": 1}
    assert set(windows.groups) == {"SC4001E0-PSG"} and set(windows.subjects) == {"00"}
    assert "Dropped 2 of 10 windows" in capsys.readouterr().err
    same = sleep_eeg().load(psg)  # the PSG file alone finds its hypnogram beside it
    assert same.labels.tolist() == windows.labels.tolist()


def test_stem_pairs_and_subjects_across_nights(tmp_path):
    write_psg(tmp_path / "d", "night1-PSG.edf", "night1-Hypnogram.edf")
    write_psg(tmp_path / "d", "SC4121E0-PSG.edf", "SC4121EC-Hypnogram.edf", seed=1)
    windows = sleep_eeg().load(tmp_path / "d")
    assert len(windows) == 16
    assert dict(zip(*np.unique(windows.subjects, return_counts=True))) == {"12": 8, "night1-PSG": 8}
    report = sleep_eeg().inspect(tmp_path / "d")
    assert report["label_counts"] == {"W": 4, "N1": 2, "N2": 4, "N3": 4, "REM": 2}
    entry = next(f for f in report["files"] if f["path"].endswith("SC4121E0-PSG.edf"))
    assert entry["hypnogram"].endswith("SC4121EC-Hypnogram.edf") and entry["duration_s"] == 300.0
    assert entry["annotations"]["Sleep stage W"] == 1 and entry["n_windows"] == 8


def test_missing_hypnogram_is_reported(tmp_path, capsys):
    psg, hyp = write_psg(tmp_path / "d", "SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf")
    hyp.unlink()
    with pytest.raises(DataError, match=r"matches none of the annotations.*found are: none"):
        sleep_eeg().load(psg)
    assert "No hypnogram found" in capsys.readouterr().err


def test_hypnogram_alone_is_refused(tmp_path):
    _, hyp = write_psg(tmp_path / "d", "SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf")
    with pytest.raises(DataError, match="is a hypnogram"):
        sleep_eeg().load(hyp)


def test_fetch_sleep_edf_through_mne_fetcher(tmp_path, monkeypatch, capsys):
    from mne.datasets.sleep_physionet import age

    calls = []

    def fake_fetch(subjects, recording=(1, 2), path=None, **kwargs):
        calls.append((list(subjects), list(recording), path))
        pairs = []
        for s in subjects:
            pairs.append(
                [str(p) for p in write_psg(Path(path) / "physionet-sleep-data", f"SC4{s:02d}1E0-PSG.edf",
                                           f"SC4{s:02d}1EC-Hypnogram.edf", seed=s)]
            )
        return pairs

    monkeypatch.setattr(age, "fetch_data", fake_fetch)
    from relpos.cli import main

    dest = tmp_path / "sleep"
    assert main(["data", "fetch", "sleep-edf", "--dest", str(dest), "--subjects", "0,1"]) == 0
    assert calls == [([0, 1], [1], str(dest))]
    out = capsys.readouterr().out.split()
    assert [Path(p).name for p in out] == [
        "SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf", "SC4011E0-PSG.edf", "SC4011EC-Hypnogram.edf"
    ]
    windows = sleep_eeg().load(dest)
    assert len(windows) == 16 and set(windows.subjects) == {"00", "01"}


def test_fetch_failure_is_one_sentence(tmp_path, monkeypatch):
    from mne.datasets.sleep_physionet import age

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(age, "fetch_data", offline)
    cls = relpos.plugins.get_dataset("sleep-edf")
    with pytest.raises(DataError, match=r"Could not fetch Sleep-EDF subjects \[0\].*Network is unreachable"):
        cls().fetch(tmp_path)


# -- labels: auto (the default) ----------------------------------------------------------------------
def default_eeg(**options):
    """The eeg modality with its defaults (no labels or windows chosen), cache off."""
    cls = relpos.get_modality("eeg")
    return cls(build_dataclass(cls.Config, {"cache": False, **options}, "modality"))


def test_a_psg_with_its_hypnogram_is_staged_on_hypnogram_epochs_by_default(tmp_path, capsys):
    psg, _ = write_psg(tmp_path / "night", "ST7021J0-PSG.edf", "ST7021JM-Hypnogram.edf", seed=4)
    windows = default_eeg().load(tmp_path / "night")
    # The same 8 epochs as labels=sleep with 30-s strides, not 55 overlapping 5-s-stride windows.
    assert windows.class_names == ["W", "N1", "N2", "N3", "REM"]
    assert windows.labels.tolist() == [0, 0, 1, 2, 2, 3, 3, 4]
    assert "sleep stages from the hypnograms" in windows.info["labelling"]
    assert set(windows.subjects) == {"02"}
    capsys.readouterr()


def test_chosen_labels_or_windows_turn_the_automatic_staging_off(tmp_path):
    write_psg(tmp_path / "night", "SC4012E0-PSG.edf", "SC4012EC-Hypnogram.edf", seconds=120.0)
    # labels chosen (none): 120 s, 30-s windows every 5 s: starts 0..90 -> 19 unlabelled windows.
    unlabelled = default_eeg(labels="none").load(tmp_path / "night")
    assert unlabelled.labels is None and len(unlabelled) == 19
    # windows chosen (10-s windows): no automatic labels either; 120 s -> starts 0..110 every 5 s: 23.
    chosen = default_eeg(window_s=10, patch_s=1).load(tmp_path / "night")
    assert chosen.labels is None and len(chosen) == 23 and chosen.info["labelling"] is None


def test_a_recording_without_hypnogram_stays_unlabelled_by_default(tmp_path):
    import mne

    data = np.random.default_rng(0).standard_normal((2, 6000)) * 20e-6
    raw = mne.io.RawArray(data, mne.create_info(["C3", "C4"], 100.0, "eeg"), verbose="error")
    raw.save(tmp_path / "plain_raw.fif", verbose="error")
    windows = default_eeg().load(tmp_path / "plain_raw.fif")
    assert windows.labels is None and len(windows) == 7  # 60 s: starts 0, 5, ..., 30


def test_the_shared_sleep_edf_night_is_staged_without_a_config(shared_data, capsys):
    """The real night (README of the shared data: W 1997, S1 58, S2 250, S3 101 + S4 119, REM 125)."""
    from relpos.cli import main

    night = shared_data / "eeg" / "sleep-edf"
    if not (night / "SC4001E0-PSG.edf").is_file():
        pytest.skip(f"the Sleep-EDF night is not in {night}")
    assert main(["data", "inspect", str(night), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["label_counts"] == {"W": 1997, "N1": 58, "N2": 250, "N3": 220, "REM": 125}
    assert report["n_windows"] == 2650 and report["extent"] == [3000]


def test_auto_labels_warn_when_only_some_recordings_have_a_hypnogram(tmp_path, capsys):
    write_psg(tmp_path / "d", "SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf", seconds=60.0)
    write_psg(tmp_path / "d", "SC4002E0-PSG.edf", "SC4002EC-Hypnogram.edf", seconds=60.0)
    (tmp_path / "d" / "SC4002EC-Hypnogram.edf").unlink()
    windows = default_eeg().load(tmp_path / "d")
    assert windows.labels is None and len(windows) == 14  # 60 s each: 30-s windows at 0, 5, ..., 30
    assert "Only 1 of 2 recordings have a hypnogram beside them" in capsys.readouterr().err
