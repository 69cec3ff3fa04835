"""The dead-channel policy shared by the multichannel modalities (modalities/common/channels.py)."""

from __future__ import annotations

import numpy as np
import pytest

from relpos_modalities.common.channels import dead_channel_warning, dead_channels, flat_throughout


def test_flat_throughout_marks_constant_empty_and_all_nan_channels_only():
    data = np.array(
        [
            [0.0, 1.5, 0.0, 1.5],  # a trigger line: live
            [3.0, 3.0, 3.0, 3.0],  # constant: dead
            [np.nan, 1e-9, 2e-9, np.nan],  # peak-to-peak 1e-9 < 1e-7 among its finite samples: dead
            [np.nan] * 4,  # no finite sample: dead
            [0.0, np.inf, 0.0, 0.0],  # an infinity is not flat
        ]
    )
    assert flat_throughout(data, 1e-7).tolist() == [False, True, True, True, False]
    assert flat_throughout(data, 0.0).tolist() == [False] * 5  # the check switched off


def test_dead_channels_is_the_union_over_recordings_in_channel_order():
    names = ["Fz", "Cz", "Pz"]
    flat = {"night1": np.array([False, False, True]), "night2": np.array([True, False, False])}
    assert dead_channels(flat, names) == ["Fz", "Pz"]
    assert dead_channels({"a": np.zeros(3, bool)}, names) == []
    with pytest.raises(ValueError, match="2 entries for 3 channel names"):
        dead_channels({"a": np.zeros(2, bool)}, names)


def test_dead_channel_warning_names_channels_recordings_and_how_to_pin():
    text = dead_channel_warning(
        ["RAW-0"], "set modality.channels to the channels to use", where={"RAW-0": ["rec1"]}, kept=["RAW-1"]
    )
    assert text == (
        "Channel 'RAW-0' is flat throughout recording 'rec1' (a dead or non-signal channel), so it is left "
        "out of every recording; set modality.channels to the channels to use (e.g. 'RAW-1') to choose the "
        "channels yourself."
    )
    two = dead_channel_warning(["A", "B"], "pin them", where={"A": ["r1"], "B": ["r2"]})
    assert two.startswith("Channels 'A' and 'B' are flat throughout recordings 'r1' and 'r2' ")
    assert dead_channel_warning([], "pin them") == ""
