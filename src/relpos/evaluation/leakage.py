"""Leakage check of the evaluation card: do test windows overlap what the run was pretrained on?

A test window *overlaps* the pretraining data when a pretraining window comes from the same
recording (its ``groups`` entry) and covers part of the same time span (``onsets`` and
``durations``), or, for windows without a recording time (trial archives, images, whose groups and
onsets are only their index in a split), when it is the same trial: a pretraining window with
identical values. Pretraining never
saw the labels, but an encoder that has seen the very test windows is evaluated on inputs it was
fitted to (a transductive comparison), which a reader of the numbers must know.

The pretraining windows are opened as training opened them (the run's data and modality settings).
When the evaluation reads the same data with the same settings and no split of its own, they are
the very windows being split: every test window overlaps, and the card says so rather than hiding
the common case (pretraining on the whole recording, then scoring blocks of it).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

#: How one recording's blocks of time are named after a split within it (evaluate._split).
_BLOCK_SUFFIX = re.compile(r"/block\d+$")


def _recordings(windows, by_blocks: bool) -> np.ndarray:
    groups = np.asarray(windows.groups, dtype=str)
    if by_blocks:  # a split within one recording renamed its windows' groups after their blocks
        groups = np.array([_BLOCK_SUFFIX.sub("", g) for g in groups])
    return groups


def _content_keys(windows) -> list[str]:
    x = windows.x.detach().cpu().numpy()
    return [hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).hexdigest() for w in x]


def _has_recording_time(windows) -> bool:
    """Onsets in a recording's time; images carry onsets in ``"window"`` units, one item each, named by index."""
    return windows.onsets is not None and (windows.info or {}).get("time_unit", "s") != "window"


def count_overlap(tests: list, seen, by_blocks: bool = False) -> tuple[int, int, str]:
    """Test windows (over all ``tests``, each a :class:`~relpos.Windows`) that overlap ``seen``.

    Returns
    -------
    overlapping, total : int
        Test windows that overlap a pretraining window, and test windows checked.
    how : str
        What overlap meant: ``"same recording and overlapping time span"`` or ``"same trial"``.
    """
    seen_recordings = np.asarray(seen.groups, dtype=str)
    total = sum(len(t) for t in tests)
    overlapping = 0
    timed = _has_recording_time(seen) and all(_has_recording_time(t) for t in tests)
    if timed:
        spans: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for recording in np.unique(seen_recordings):
            mine = seen_recordings == recording
            order = np.argsort(seen.onsets[mine], kind="stable")
            starts = seen.onsets[mine][order]
            ends = np.maximum.accumulate((seen.onsets[mine] + seen.durations[mine])[order])
            spans[str(recording)] = (starts, ends)
        for test in tests:
            for recording, onset, duration in zip(_recordings(test, by_blocks), test.onsets, test.durations):
                found = spans.get(str(recording))
                if found is None:
                    continue
                starts, ends = found
                before = int(np.searchsorted(starts, onset + duration, side="left"))  # windows starting before its end
                overlapping += int(before > 0 and ends[before - 1] > onset)
        return overlapping, total, "same recording and overlapping time span"
    # Trials and images are named by their index in a split, so only their values identify them.
    known = set(_content_keys(seen))
    for test in tests:
        overlapping += sum(key in known for key in _content_keys(test))
    return overlapping, total, "same trial (identical values)"


def leakage_check(tests: list, by_blocks: bool, opened: Any, eval_source: Any, run_modality, run_source: Any,
                  same_settings: bool) -> dict[str, Any]:
    """The card's leakage entry: what the run was pretrained on, and how many test windows overlap it.

    Parameters
    ----------
    tests : list of Windows
        The distinct test parts of the evaluation (one per fold of one recording, else one).
    by_blocks : bool
        Whether the test parts are blocks of one recording (their groups renamed after the blocks).
    opened : Windows or (Windows, Windows)
        The evaluation data as opened (all its windows, or its own train/test split).
    eval_source, run_source :
        The evaluation's data and the run's training data (``config.data``).
    run_modality : relpos.Modality
        The run's modality, configured as in training.
    same_settings : bool
        Whether the evaluation opened its data with the run's modality settings (no overrides).
    """
    from ..errors import RelposError

    source = run_source if run_source is not None else run_modality.default_data()
    entry: dict[str, Any] = {"pretrained_on": None if source is None else str(source)}
    if source is None:
        entry.update(checked=False, reason="the run records no training data (it was given in memory)")
        return entry
    same_data = (_same_path(source, eval_source) and same_settings and not isinstance(opened, tuple))
    if same_data:
        seen = opened
        entry["pretrained_on_what"] = "the same data with the same settings: every window of it"
    else:
        from ..modality import open_data

        try:
            seen = open_data(run_modality, source)
        except (RelposError, OSError) as exc:
            entry.update(checked=False, reason=f"the pretraining data cannot be opened here ({str(exc).rstrip('.')})")
            return entry
        entry["pretrained_on_what"] = f"{len(seen)} windows opened as training opened them"
    overlapping, total, how = count_overlap(tests, seen, by_blocks)
    entry.update(checked=True, test_windows=total, overlapping=overlapping, overlap_means=how)
    return entry


def _same_path(a: Any, b: Any) -> bool:
    from pathlib import Path

    if not isinstance(a, (str, Path)) or not isinstance(b, (str, Path)):
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def leakage_sentence(entry: dict[str, Any]) -> str:
    """One line for the card and the warning."""
    if not entry.get("checked"):
        return f"not checked: {entry.get('reason', 'unknown')}"
    n, total = entry["overlapping"], entry["test_windows"]
    if n == 0:
        return f"none of the {total} test windows overlaps the pretraining data ({entry['pretrained_on']})"
    return (f"{n} of {total} test windows overlap the pretraining data ({entry['overlap_means']}; pretrained on "
            f"{entry['pretrained_on']}: {entry['pretrained_on_what']}); the encoder saw them, without labels, before "
            f"being scored on them")
