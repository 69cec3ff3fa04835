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
