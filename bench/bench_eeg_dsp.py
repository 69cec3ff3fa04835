"""Band-pass and resampling of one recording: MNE's ``raw.filter``/``raw.resample`` against the same
numbers computed for blocks of channels at once (``relpos_modalities.eeg.dsp``).

The recording is the bundled 61-s, 64-channel, 160-Hz EEGMMIDB sample repeated ``--copies`` times
(10: 610 s, the files of ``bench_eeg_data.py``). Single-threaded; each case is timed ``--repeats``
times and the table gives the minimum and the median, in ms.

    .venv/bin/python bench/bench_eeg_dsp.py
    .venv/bin/python bench/bench_eeg_dsp.py --copies 60 --l-freq 0.5 --h-freq 40 --sfreq 128
"""

from __future__ import annotations

import argparse
import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summarise, time_call  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """Minimum and median of ``repeats`` timed calls, in ms."""
    stats = summarise(time_call(fn, repeats, warmup=0))
    return stats["min_s"] * 1000, stats["median_s"] * 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=10, help="61-s copies of the sample concatenated (default 10)")
    p.add_argument("--l-freq", type=float, default=0.1)
    p.add_argument("--h-freq", type=float, default=30.0)
    p.add_argument("--sfreq", type=float, default=100.0, help="target rate, Hz")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)

    import mne

    from relpos_modalities.eeg import dsp as eeg_dsp
    from relpos_modalities.eeg import SAMPLE

    raw = mne.io.read_raw(SAMPLE, preload=True, verbose="error").pick("eeg")
    data = np.tile(raw.get_data(), (1, args.copies))
    raw = mne.io.RawArray(data, raw.info, verbose="error")
    sf = float(raw.info["sfreq"])
    filtered = data.copy()
    eeg_dsp.band_pass_(filtered, sf, args.l_freq, args.h_freq)
    raw_filtered = mne.io.RawArray(filtered, raw.info, verbose="error")

    def mne_filter():
        raw.copy().filter(args.l_freq, args.h_freq, verbose="error")

    def ours_filter():
        eeg_dsp.band_pass_(data.copy(), sf, args.l_freq, args.h_freq)

    rows = [
        ("band-pass: MNE `raw.filter` (incl. copy)", timed(mne_filter, args.repeats)),
        ("band-pass: batched `eeg_dsp.band_pass_` (incl. copy)", timed(ours_filter, args.repeats)),
        (
            "resampling: MNE `raw.resample` (incl. copy)",
            timed(lambda: raw_filtered.copy().resample(args.sfreq, verbose="error"), args.repeats),
        ),
        ("resampling: batched `eeg_dsp.resample`", timed(lambda: eeg_dsp.resample(filtered, args.sfreq, sf), args.repeats)),
        ("copy of the recording (in both MNE rows)", timed(raw.copy, args.repeats)),
    ]
    ref = raw.copy().filter(args.l_freq, args.h_freq, verbose="error").resample(args.sfreq, verbose="error").get_data()
    ours = eeg_dsp.resample(filtered, args.sfreq, sf)
    diff = float(np.max(np.abs(ref - ours)) / np.max(np.abs(ref)))

    print(
        f"{data.shape[0]} channels x {data.shape[1] / sf:.0f} s at {sf:g} Hz; band-pass {args.l_freq}-{args.h_freq} Hz, "
        f"resampled to {args.sfreq:g} Hz; mne {mne.__version__}; 1 thread; {args.repeats} repeats\n"
    )
    print("| step | min ms | median ms |\n|---|---|---|")
    for name, (lo, med) in rows:
        print(f"| {name} | {lo:.0f} | {med:.0f} |")
    print(f"\nlargest difference to MNE after both steps: {diff:.1e} of the largest value")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
