"""``relpos data fetch sleep-edf``: the Sleep-EDF Expanded cassette recordings, through MNE's fetcher.

Each night is a PSG file (``SC4ssNE0-PSG.edf``: EEG Fpz-Cz and Pz-Oz at 100 Hz, EOG, EMG, ...) and a
hypnogram (``SC4ssNXX-Hypnogram.edf``: R&K stages every 30 s). The eeg modality pairs them by name, so
``relpos train --modality eeg --data DEST --set modality.labels=sleep`` uses the stages as labels.
Source: PhysioNet, Kemp et al., IEEE TBME 47(9):1185–1194, 2000; Goldberger et al., Circulation
101(23):e215–e220, 2000 (ODC-By 1.0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relpos.datasets import Dataset
from relpos.errors import ConfigError, DataError


class SleepEDF(Dataset):
    """Sleep-EDF Expanded (sleep cassette): PSG + hypnogram pairs, AASM-stageable, from PhysioNet."""

    name = "sleep-edf"
    description = "Sleep-EDF Expanded cassette nights (PSG + hypnogram EDF pairs) from PhysioNet, via MNE"
    modality = "eeg"

    def fetch(self, dest: Path, subjects: list[int] | None = None, **options: Any) -> list[Path]:
        """Download (or reuse) nights of the given subjects under ``dest``.

        Parameters
        ----------
        dest : pathlib.Path
            Folder handed to MNE as its data path (MNE adds ``physionet-sleep-data/``).
        subjects : list of int, optional
            Subject indices 0–82 (some are missing upstream); default ``[0]``.
        recording : list of int or str, optional
            Nights, ``[1]`` (default), ``[2]`` or ``[1, 2]``; a string ``"1,2"`` works too.

        Returns
        -------
        list of pathlib.Path
            PSG and hypnogram files, in pairs.
        """
        from mne.datasets.sleep_physionet import age

        unknown = sorted(set(options) - {"recording"})
        if unknown:
            raise ConfigError(
                f"Unknown option(s) {', '.join(map(repr, unknown))} for data set 'sleep-edf'; allowed: 'recording'."
            )
        recording = options.get("recording", [1])
        if isinstance(recording, (str, int)):
            recording = [int(r) for r in str(recording).split(",") if str(r).strip()]
        if not recording or any(r not in (1, 2) for r in recording):
            raise ConfigError(f"Invalid value for the 'recording' option of 'sleep-edf': allowed 1, 2 or 1,2, got {recording!r}.")
        subjects = [0] if not subjects else [int(s) for s in subjects]
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            pairs = age.fetch_data(subjects=subjects, recording=list(recording), path=str(dest), on_missing="warn")
        except Exception as exc:  # noqa: BLE001 - network, checksum and value errors alike
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(
                f"Could not fetch Sleep-EDF subjects {subjects} (recording {list(recording)}) into {str(dest)!r}: {reason}"
            ) from None
        files = [Path(p) for pair in pairs for p in pair]
        if not files:
            raise DataError(f"Sleep-EDF has none of subjects {subjects} for recording {list(recording)}.")
        return files
