"""The second load of the same recordings comes from the cache without importing MNE at all."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import EEG_SAMPLE

SCRIPT = """
import sys
import relpos
modality = relpos.get_modality("eeg")()
windows = modality.load(sys.argv[1])
print(windows.info["cache"]["hit"], "mne" in sys.modules, tuple(windows.x.shape))
"""


def test_cache_hit_skips_mne_entirely(tmp_path):
    env = {**os.environ, "RELPOS_CACHE_DIR": str(tmp_path / "cache")}
    runs = [
        subprocess.run([sys.executable, "-c", SCRIPT, str(EEG_SAMPLE)], env=env, capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    # First run builds the cache with MNE; the second memory-maps it: 7 windows of 64 × 3000.
    assert runs[0].stdout.split()[:2] == ["False", "True"]
    assert runs[1].stdout.strip() == "True False (7, 64, 3000)"
