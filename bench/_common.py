"""Helpers shared by the benchmark scripts: the data-set table, timing, machine facts, markdown and JSON output."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


def data_root() -> Path:
    """The shared data folder: ``$RELPOS_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("RELPOS_SHARED_DATA") or REPO.parent / "shared" / "data")


#: MNIST as the benchmarks read it: 28-px digits in 7-px patches (a 4x4 grid), grey, never mirrored.
MNIST_SETTINGS = ("modality.image_size=28", "modality.patch_size=7", "modality.color=grey", "modality.hflip=false")


@dataclass(frozen=True)
class DataSet:
    """A labelled data set of ``../shared/data``: its file, modality and recipes.

    ``recipe_dir / f"{prefix}_{pretext}.yaml"`` is the data set's recipe for a pretext;
    ``modality_overrides`` is what a run started from the modality's defaults (rather than from that
    recipe) needs to read the data as the recipes do.
    """

    name: str
    title: str
    kind: str  # "EEG", "sensor" or "image"
    modality: str
    file: str  # relative to the data root: a file or a folder
    recipe_dir: Path
    prefix: str
    normalizable: bool  # whether the modality has a ``normalize`` setting
    modality_overrides: tuple[str, ...] = ()
    eval_options: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return data_root() / self.file

    def recipe(self, pretext: str) -> Path:
        return self.recipe_dir / f"{self.prefix}_{pretext.replace('-', '_')}.yaml"


_BLINK = ("modality.split=train", "modality.npz_unit=uV", "modality.l_freq=0.0", "modality.h_freq=30.0",
          "modality.sfreq=100.0", "modality.window_s=2.0", "modality.stride_s=2.0", "modality.patch_s=0.2")

#: Every labelled data set the benchmarks use, in report order.
DATASETS = {
    ds.name: ds for ds in (
        DataSet("scp1", "SelfRegulationSCP1", "EEG", "eeg", "eeg/scp1.npz", REPO / "configs", "scp1", True),
        DataSet("blink", "Blink", "EEG", "eeg", "eeg/blink.npz", REPO / "configs", "blink", True, _BLINK),
        DataSet("basicmotions", "BasicMotions", "sensor", "timeseries", "sensor/basicmotions.npz", REPO / "configs",
                "basicmotions", True),
        DataSet("mnist", "MNIST", "image", "image", "images/mnist.npz", BENCH_DIR / "configs", "mnist", False,
                MNIST_SETTINGS),
        DataSet("sleep", "Sleep-EDF (one night)", "EEG", "eeg", "eeg/sleep-edf", REPO / "configs", "eeg_sleep", True,
                eval_options={"time_blocks": 30}),
    )
}


#: The hand-crafted anchor of sleep staging: EEG bands (name, low Hz, high Hz), low edge included,
#: high edge excluded. Five classic bands and the total power of the five together.
SLEEP_BANDS = (("delta", 0.5, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 12.0), ("sigma", 12.0, 16.0),
               ("beta", 16.0, 30.0), ("total", 0.5, 30.0))


def log_band_powers(x, sfreq: float, bands=SLEEP_BANDS, segment_s: float = 4.0):
    """Log10 band powers of each channel of each window (Welch), what a sleep researcher computes first.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, C, T)`` windows in the signal's unit (µV for EEG).
    sfreq : float
        Sampling rate, Hz.
    bands : sequence of (name, low_hz, high_hz)
        Bands, ``low_hz <= f < high_hz``.
    segment_s : float
        Welch segment length, s (Hann window, half overlap): 4 s gives a 0.25-Hz resolution.

    Returns
    -------
    numpy.ndarray
        ``(N, C * len(bands))`` float64: ``log10`` of the power in each band (unit², the integral of
        the one-sided PSD over the band), channel-major (all bands of channel 0 first).
    """
    import numpy as np
    from scipy.signal import welch

    x = np.asarray(x, dtype=np.float64)
    nperseg = min(int(round(segment_s * sfreq)), x.shape[-1])
    freqs, psd = welch(x, fs=sfreq, nperseg=nperseg, axis=-1)  # (N, C, F), unit² / Hz
    df = freqs[1] - freqs[0]
    powers = [psd[..., (freqs >= lo) & (freqs < hi)].sum(axis=-1) * df for _, lo, hi in bands]
    out = np.stack(powers, axis=-1)  # (N, C, B)
    return np.log10(np.maximum(out, np.finfo(np.float64).tiny)).reshape(len(x), -1)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Facts that make a figure reproducible."""
    import torch  # here, not at the top: bench_eeg_data's timed workers import this module

    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def time_call(fn: Callable[[], object], repeats: int, warmup: int, cpu: list[float] | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (CPU ops are
    synchronous, so no device synchronisation is needed). When ``cpu`` is a list, the process CPU
    seconds of each call are appended to it (robust to other processes competing for the cores
    when one thread runs; with N threads it is up to N times the wall time)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
    return times


def cpu_pressure() -> dict:
    """Load average and CPU pressure (other processes competing for the cores skew timings)."""
    out: dict = {}
    try:
        out["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    try:
        with open("/proc/pressure/cpu") as fh:
            line = fh.readline().split()
            out["psi_cpu_some_avg10"] = float(line[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return out


def summarise(times: Sequence[float]) -> dict:
    times = sorted(times)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {
        "median_s": statistics.median(times),
        "min_s": times[0],
        "max_s": times[-1],
        "q1_s": q[0],
        "q3_s": q[2],
        "n": len(times),
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def fmt(value: float, digits: int = 3) -> str:
    """A number with ``digits`` significant figures, no scientific notation for the usual ranges."""
    if value == 0 or not (value == value):  # zero or NaN
        return str(value)
    magnitude = abs(value)
    if magnitude >= 10 ** digits:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - int(f"{magnitude:e}".split("e")[1]))
    return f"{value:,.{decimals}f}"


def write_results(stem: str, markdown: str, payload: dict, out_dir: Path | None = None) -> tuple[Path, Path]:
    out_dir = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md_path.write_text(markdown.rstrip() + "\n")
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    return md_path, json_path


def cpu_times() -> tuple[float, float] | None:
    """(all, idle) CPU clock ticks of the machine since boot (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return float(sum(fields[:8])), float(idle)


def machine_busy_s() -> float | None:
    """CPU seconds all processes have used since boot, or None."""
    t = cpu_times()
    return None if t is None else (t[0] - t[1]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait_s: float, idle_frac: float = 0.9, need_s: int = 3) -> dict:
    """Wait until the CPUs are ≥ ``idle_frac`` idle for ``need_s`` consecutive seconds."""
    t0 = time.monotonic()
    streak, last_idle = 0, None
    prev = cpu_times()
    while prev is not None and time.monotonic() - t0 < max_wait_s:
        time.sleep(1.0)
        cur = cpu_times()
        total, idle = cur[0] - prev[0], cur[1] - prev[1]
        prev = cur
        last_idle = idle / total if total > 0 else 1.0
        streak = streak + 1 if last_idle >= idle_frac else 0
        if streak >= need_s:
            break
    return {
        "waited_s": round(time.monotonic() - t0, 1),
        "quiet": streak >= need_s,
        "idle_frac_last_s": None if last_idle is None else round(last_idle, 3),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }


class Contention:
    """Measures how much CPU *other* processes used while a benchmark ran.

    ``others_cores`` is the average number of cores other processes kept busy: near 0 on a quiet
    machine; anything close to a whole core on this 2-core machine makes the timings pessimistic.
    """

    def __enter__(self) -> "Contention":
        self.t0, self.busy0, self.own0 = time.perf_counter(), machine_busy_s(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        busy1, own = machine_busy_s(), time.process_time() - self.own0
        self.result = {"wall_s": wall, "own_cpu_s": own}
        if self.busy0 is not None and busy1 is not None:
            others = max(0.0, (busy1 - self.busy0) - own)
            self.result.update({"others_cpu_s": others, "others_cores": others / max(wall, 1e-9)})

    def start(self) -> "Contention":
        return self.__enter__()

    def stop(self) -> dict:
        self.__exit__(None, None, None)
        return self.result

    def describe(self) -> str:
        r = self.result
        if "others_cores" not in r:
            return "other processes' CPU use unknown"
        return (f"other processes kept {r['others_cores']:.2f} cores busy on average during the run "
                f"(this process: {r['own_cpu_s'] / max(r['wall_s'], 1e-9):.2f} cores)")
