"""``relpos data inspect`` and ``relpos data fetch``, and data sets registered through the
``register_datasets`` hook."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import relpos
import relpos.plugins
from relpos.cli import main, parse_subjects
from relpos.datasets import Dataset
from relpos.errors import ConfigError, DataError
from relpos.modality import Modality, Windows

from conftest import EEG_SAMPLE


class TinySet(Dataset):
    """A data set whose 'download' writes one small file per subject."""

    name = "tinyset"
    description = "A tiny test data set."
    modality = "reporting"

    def fetch(self, dest: Path, subjects: list[int] | None = None, size: int = 3) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        files = []
        for subject in subjects if subjects is not None else [0]:
            path = dest / f"subject{subject:02d}.dat"
            path.write_bytes(b"x" * size)
            files.append(path)
        return files


@dataclass
class ReportingConfig:
    patch_size: int = 4
    windows: int = 3


class ReportingModality(Modality):
    """A modality that reports per-file details, skipped files and dropped windows through info."""

    name = "reporting"
    axes = ("time",)
    Config = ReportingConfig

    def inspect(self, data):
        report = super().inspect(data)
        report["unlabelled"] = {"BAD_movement": 4}
        return report

    def load(self, data) -> Windows:
        path = Path(data)
        if not path.exists():
            raise DataError(f"Data path {str(path)!r} does not exist.")
        n = self.config.windows
        return Windows(
            x=torch.zeros(n, 2, 8),
            labels=torch.tensor([i % 2 for i in range(n)]),
            groups=np.array(["rec1"] * n),
            class_names=["rest", "move"],
            info={
                "source": str(path),
                "sfreq": 50.0,
                "ch_names": ["Fz", "Cz"],
                "files": [{"path": str(path), "channels": ["Fz", "Cz"], "sfreq": 200.0, "duration_s": 12.5,
                           "annotations": {"rest": 2, "move": 1}, "n_windows": n}],
                "skipped": [{"path": "broken.edf", "reason": "the file is truncated"}],
                "dropped": {"NaN or inf values": 2, "flat signal": 1},
            },
        )


class TestPlugin:
    @relpos.hookimpl
    def register_datasets(self, register):
        register(TinySet)

    @relpos.hookimpl
    def register_modalities(self, register):
        register(ReportingModality)


@pytest.fixture
def test_plugin():
    relpos.plugins.register_plugin(TestPlugin(), name="data-cli-test")
    yield
    relpos.plugins.unregister_plugin("data-cli-test")


# -- data sets ----------------------------------------------------------------------------------------
def test_plugins_lists_the_dataset(test_plugin, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "Data sets:" in out
    [line] = [line for line in out.splitlines() if line.strip().startswith("tinyset ")]
    assert line.endswith(
        "A tiny test data set.  (plugin 'data-cli-test', registered at run time) [modality: reporting]"
    )
    assert main(["plugins", "--json"]) == 0
    listed = {(p["kind"], p["name"]): p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert listed["dataset", "tinyset"]["modality"] == "reporting"
    assert "tinyset" in relpos.plugins.list_datasets()
    assert relpos.plugins.list_datasets("tiny*") == ["tinyset"]
    assert relpos.plugins.get_dataset("tinyset") is TinySet


def test_fetch_downloads_into_dest_and_prints_the_files(test_plugin, tmp_path, capsys):
    dest = tmp_path / "downloads"
    assert main(["data", "fetch", "tinyset", "--dest", str(dest), "--subjects", "0,2-3"]) == 0
    captured = capsys.readouterr()
    expected = [dest / "subject00.dat", dest / "subject02.dat", dest / "subject03.dat"]
    assert captured.out.splitlines() == [str(p) for p in expected]
    assert all(p.read_bytes() == b"xxx" for p in expected)
    assert "3 files of data set 'tinyset'" in captured.err and "--modality reporting" in captured.err


def test_fetch_json_and_options(test_plugin, tmp_path, capsys):
    assert main(["data", "fetch", "tinyset", "--dest", str(tmp_path), "--option", "size=5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"dataset": "tinyset", "modality": "reporting", "dest": str(tmp_path),
                   "files": [str(tmp_path / "subject00.dat")]}
    assert (tmp_path / "subject00.dat").read_bytes() == b"xxxxx"


def test_fetch_default_dest_is_relpos_data_dir(test_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RELPOS_DATA_DIR", str(tmp_path))
    assert main(["data", "fetch", "tinyset"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tinyset" / "subject00.dat")


@pytest.mark.parametrize(
    "args, message",
    [
        (["tinyse"], "Unknown dataset 'tinyse'. Did you mean 'tinyset'? Available: "),
        (["tinyset", "--subjects", "a,b"], "Invalid value for '--subjects': expected subject indices"),
        (["tinyset", "--option", "sise=5"], "Data set 'tinyset' has no option 'sise'. Did you mean 'size'?"),
    ],
)
def test_fetch_bad_input_exits_2_with_one_line(test_plugin, tmp_path, capsys, args, message):
    assert main(["data", "fetch", *args, "--dest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relpos: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_parse_subjects():
    assert parse_subjects("0, 1,5-7") == [0, 1, 5, 6, 7]
    assert parse_subjects(None) is None
    for bad in ("", "3-1", "-1", "x"):
        with pytest.raises(ConfigError):
            parse_subjects(bad)


# -- inspect ----------------------------------------------------------------------------------------
def test_inspect_the_bundled_edf(cli):
    code, out, err = cli("data", "inspect", EEG_SAMPLE, "--modality", "eeg")
    assert code == 0, err
    # 61.0 s at 100 Hz = 6100 samples; 30-s windows (3000) every 5 s (500): starts 0, 500, ..., 3000 -> 7
    assert "Windows: 7 (each 64 channels × 3000)" in out
    assert "Channels: 64 (" in out
    assert "Sampling rate after preprocessing: 100 Hz" in out


def test_inspect_json_parses(capsys):
    assert main(["data", "inspect", str(EEG_SAMPLE), "--modality", "eeg", "--json",
                 "--set", "modality.window_s=20", "--set", "modality.stride_s=20"]) == 0
    report = json.loads(capsys.readouterr().out)
    # 6100 samples, windows of 2000 every 2000: starts 0, 2000, 4000 -> 3
    assert report["modality"] == "eeg"
    assert report["n_windows"] == 3 and report["channels"] == 64 and report["extent"] == [2000]
    assert report["sfreq"] == 100.0 and len(report["ch_names"]) == 64
    assert report["label_counts"] == {} or sum(report["label_counts"].values()) == 3


def test_inspect_a_missing_path_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.edf"
    assert main(["data", "inspect", str(missing), "--modality", "eeg"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relpos: error: ") and str(missing) in err
    assert len(err.strip().splitlines()) == 1


def test_inspect_rejects_unknown_and_non_modality_keys(test_plugin, tmp_path, capsys):
    args = ["data", "inspect", str(tmp_path), "--modality", "reporting"]
    assert main([*args, "--set", "modality.windws=10"]) == 2
    assert "Unknown config key 'modality.windws'. Did you mean 'windows'?" in capsys.readouterr().err
    assert main([*args, "--set", "windows=many"]) == 2
    assert "Invalid value for 'modality.windows': expected an integer, got 'many'." in capsys.readouterr().err
    assert main(["data", "inspect", str(EEG_SAMPLE), "--modality", "eeg", "--set", "train.steps=1"]) == 2
    assert "takes modality settings only" in capsys.readouterr().err
    assert main(["data", "inspect", str(EEG_SAMPLE), "--modality", "eg"]) == 2
    assert "Did you mean 'eeg'?" in capsys.readouterr().err


def test_inspect_report_shows_files_skipped_and_dropped(test_plugin, tmp_path, capsys):
    data = tmp_path / "rec1.dat"
    data.write_bytes(b"")
    assert main(["data", "inspect", str(data), "--modality", "reporting", "--set", "windows=5"]) == 0
    out = capsys.readouterr().out
    expected = f"""\
Modality: reporting
Source: {data}
Files (1):
  {data}
    channels: 2 (Fz, Cz)
    sfreq: 200 Hz
    duration: 12.5 s
    annotations: rest ×2, move ×1
    windows: 5
Windows: 5 (each 2 channels × 8)
Channels: 2 (Fz, Cz)
Sampling rate after preprocessing: 50 Hz
Subjects: 1, recordings: 1
Labels: rest 3, move 2
Recording time: none (the modality gives no onsets): pretexts that relate windows of one recording refuse it
Skipped (1):
  broken.edf: the file is truncated
Dropped windows (3):
  NaN or inf values: 2
  flat signal: 1
Unlabelled: BAD_movement: 4
"""
    assert out == expected  # labels i % 2 for i in 0..4: 0,1,0,1,0 -> rest 3, move 2
    assert main(["data", "inspect", str(data), "--modality", "reporting", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == [{"path": "broken.edf", "reason": "the file is truncated"}]
    assert report["dropped"] == {"NaN or inf values": 2, "flat signal": 1}
    assert report["label_counts"] == {"rest": 2, "move": 1}  # 3 windows: 0,1,0
    assert report["files"][0]["annotations"] == {"rest": 2, "move": 1}


def test_inspect_an_image_folder(make_image_folder, capsys):
    folder = make_image_folder()
    assert main(["data", "inspect", str(folder), "--modality", "image", "--set", "modality.image_size=16"]) == 0
    out = capsys.readouterr().out
    assert "Windows: 4 (each 3 channels × 16 × 16)" in out  # 4 images, one of them RGB -> colour
    assert "Labels: none" in out


def test_data_without_a_subcommand_shows_help(capsys):
    assert main(["data"]) == 2
    assert "inspect" in capsys.readouterr().err
