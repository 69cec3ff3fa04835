"""Windows per second from EDF files to normalised tensors: relpos's ``eeg`` modality vs braindecode.

Both sides start from the same EDF files and end at per-window, per-channel z-scored float32 torch
tensors, with the same parameters (the PART paper's recipe, the ``eeg`` modality's defaults):
EEG channels, band-pass 0.1–30 Hz (MNE's default FIR), resampling to 100 Hz, 30-s windows, stride
30 s (non-overlapping) and 5 s (the modality's default stride).

- **relpos, first pass**: ``relpos.get_modality("eeg")(config).load(folder)`` with an empty
  ``RELPOS_CACHE_DIR``. It reads, filters, resamples and windows every file with MNE and writes the
  windows to the on-disk cache.
- **relpos, from cache**: the same call again in a fresh process; it memory-maps the cache and must
  not import MNE (checked: ``"mne" in sys.modules``). Timed with a warm page cache, and again after
  evicting the cache files from the page cache (``posix_fadvise(DONTNEED)``), i.e. read from disk.
- **braindecode**: ``preprocess`` with ``Preprocessor("pick_types", eeg=True)``,
  ``Preprocessor("filter", l_freq=0.1, h_freq=30)``, ``Preprocessor("resample", sfreq=100)``, then
  ``create_fixed_length_windows(window_size_samples=3000, window_stride_samples=stride,
  drop_last_window=True)``, then every window is z-scored per channel into a torch tensor.
- **braindecode, reloading its saved preprocessing** (for information): ``preprocess(...,
  save_dir=...)`` was run once; ``load_concat_dataset`` + ``create_fixed_length_windows`` + the same
  z-scoring, i.e. braindecode's own way of not re-filtering.

Every timed figure covers loading *and* touching every window (relpos's windows are memory-mapped,
so each one is summed in chunks of 64; braindecode's are summed after z-scoring), excludes the
imports (reported apart), and runs in a fresh single-threaded subprocess (``OMP_NUM_THREADS=1``,
``torch.set_num_threads(1)``, MNE's ``n_jobs=1``, braindecode's ``n_jobs=1``). Each case runs
``--repeats`` times (median reported); before each run the script waits (up to ``--max-wait-s``)
until ``/proc/stat`` shows the CPUs ≥ 90 % idle for 3 s, and records the load average and the CPU
other processes used during the run.

braindecode is not a dependency of relpos: it lives only in ``bench/.env-braindecode`` (installed
with ``pip install --no-deps --target``, see ``docs/history.md``) and is put on ``PYTHONPATH`` only
for the braindecode subprocesses.

The data set: the bundled 61-s, 64-channel, 160-Hz EEGMMIDB recording, concatenated ``--copies``
times per file (boundary annotations removed) and exported with MNE/edfio to ``--files`` EDF files.

Usage::

    .venv/bin/python bench/bench_eeg_data.py                  # 12 files x 10 copies (2.0 h), strides 30 and 5
    .venv/bin/python bench/bench_eeg_data.py --files 4 --copies 2 --repeats 1 --max-wait-s 0   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import REPO, machine_busy_s, wait_quiet  # noqa: E402  (stdlib only: cheap in the timed workers)

SAMPLE = REPO / "modalities" / "data" / "eegmmidb_S001R02.edf"
BRAINDECODE_ENV = BENCH_DIR / ".env-braindecode"
STEM = "eeg_data"

L_FREQ, H_FREQ, SFREQ, WINDOW_S = 0.1, 30.0, 100.0, 30.0
CHUNK = 64  # windows per chunk when touching / iterating
# Imported before the timer by both first-pass workers, so that neither side's windows/s pays for
# importing MNE and SciPy (the import times are reported apart). MNE imports its EDF reader,
# joblib (for filtering) and a few of its own modules (for filtering and resampling) lazily;
# braindecode's own import brings most of them in before the timer, so they are imported here for
# both sides (relpos paid ~0.25 s for them inside its timer otherwise). The from-cache worker
# imports none of them: it checks that loading from the cache does not import MNE.
PREIMPORT = ("mne", "mne.filter", "mne.io", "mne.io.edf", "joblib", "mne.cov", "mne.epochs", "mne.source_estimate",
             "scipy.signal", "scipy.fft")


def preimport() -> None:
    """Import :data:`PREIMPORT`, and every file reader of ``mne.io``: ``mne.io.read_raw`` imports
    them all on its first call (MNE loads them lazily), which would otherwise land in the timer."""
    import importlib

    for name in PREIMPORT:
        importlib.import_module(name)
    import mne.io

    for name in getattr(mne.io, "__all__", []):
        getattr(mne.io, name, None)


THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")}


# ---------------------------------------------------------------------------------------------
# memory and machine facts (used by the workers: no torch import needed here)
# ---------------------------------------------------------------------------------------------
def proc_status() -> dict:
    """VmHWM, VmRSS, RssAnon, RssFile of this process, in MiB."""
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key + "_mib"] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


class PeakSampler:
    """Samples RssAnon and VmRSS of this process every ``period_s`` in a thread (peaks in MiB).

    VmHWM counts the file-backed pages of a memory map as well; the peak *anonymous* RSS is the
    memory the process really owns (the page cache behind a memory map is reclaimable).
    """

    def __init__(self, period_s: float = 0.005):
        import threading

        self.period_s, self.anon, self.rss = period_s, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        st = proc_status()
        self.anon = max(self.anon, st.get("RssAnon_mib", 0.0))
        self.rss = max(self.rss, st.get("VmRSS_mib", 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def __enter__(self) -> "PeakSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def evict_page_cache(paths) -> int:
    """Drop the files' clean pages from the page cache (no root needed); returns bytes covered."""
    total = 0
    for path in paths:
        path = Path(path)
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return total


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# data set
# ---------------------------------------------------------------------------------------------
def build_dataset(folder: Path, n_files: int, copies: int) -> dict:
    """``n_files`` EDF files, each the sample recording concatenated ``copies`` times."""
    import mne

    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "dataset.json"
    want = {"sample": str(SAMPLE), "sample_size": SAMPLE.stat().st_size, "files": n_files, "copies": copies}
    if stamp.exists():
        have = json.loads(stamp.read_text())
        if {k: have.get(k) for k in want} == want and all((folder / f).exists() for f in have["names"]):
            return have
    for old in folder.glob("*.edf"):
        old.unlink()
    raw = mne.io.read_raw(SAMPLE, preload=True, verbose="error")
    raws = [raw.copy() for _ in range(copies)]
    long = mne.concatenate_raws(raws, verbose="error") if copies > 1 else raws[0]
    # concatenate_raws adds BAD/EDGE boundary annotations; drop them so that MNE filters the whole
    # recording as one segment and no window is "bad" (the original T0/T1/T2 events stay).
    keep = [i for i, d in enumerate(long.annotations.description) if "boundary" not in d.lower()]
    long.set_annotations(long.annotations[keep])
    names = []
    for i in range(n_files):
        name = f"rec_{i:03d}.edf"
        mne.export.export_raw(folder / name, long, fmt="edf", overwrite=True, verbose="error")
        names.append(name)
    check = mne.io.read_raw(folder / names[0], preload=False, verbose="error")
    info = dict(want)
    info.update(
        names=names,
        channels=len(check.ch_names),
        sfreq=float(check.info["sfreq"]),
        duration_s=float(check.n_times / check.info["sfreq"]),
        bytes=int(sum((folder / n).stat().st_size for n in names)),
    )
    info["hours"] = info["duration_s"] * n_files / 3600
    stamp.write_text(json.dumps(info, indent=2))
    return info


def describe_dataset(folder: Path) -> dict:
    """The facts ``build_dataset`` gives, for a folder of EDF files given with ``--data-dir``."""
    import mne

    names = sorted(f.name for f in folder.glob("*.edf") if "hypnogram" not in f.name.lower())
    raws = [mne.io.read_raw(folder / n, preload=False, verbose="error") for n in names]
    duration_s = sum(r.n_times / r.info["sfreq"] for r in raws)
    return {
        "folder": folder.name, "names": names, "files": len(names),
        "channels": len(raws[0].ch_names), "sfreq": float(raws[0].info["sfreq"]),
        "duration_s": duration_s / len(names), "hours": duration_s / 3600,
        "bytes": int(sum((folder / n).stat().st_size for n in names)),
    }


# ---------------------------------------------------------------------------------------------
# workers (run in fresh subprocesses)
# ---------------------------------------------------------------------------------------------
def _probe_indices(n: int) -> list[int]:
    return sorted({0, 1, n // 2, n - 1})


def worker_relpos(args) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    if args.preimport:
        preimport()
    import relpos

    Mod = relpos.get_modality("eeg")
    cfg = Mod.Config()
    # the windows braindecode cuts: a fixed grid from the start, each z-scored per channel
    settings = dict(l_freq=L_FREQ, h_freq=H_FREQ, sfreq=SFREQ, window_s=WINDOW_S, stride_s=args.stride,
                    labels="none", normalize="instance", n_jobs=args.n_jobs)
    if args.channels:
        settings["channels"] = args.channels
    for key, value in settings.items():
        setattr(cfg, key, value)
    for key in ("channel_types",):
        if hasattr(cfg, key):
            setattr(cfg, key, "eeg")
    mod = Mod(cfg)
    mne_before = "mne" in sys.modules
    mem_after_import = proc_status()
    t_import = time.perf_counter() - t0

    sampler = PeakSampler().__enter__()
    busy0, cpu0 = machine_busy_s(), time.process_time()
    t1 = time.perf_counter()
    windows = mod.load(args.data)
    t_load = time.perf_counter() - t1
    mne_imported = "mne" in sys.modules and not mne_before
    x = windows.x
    n = len(windows)
    total = 0.0
    peak_anon = 0.0
    t2 = time.perf_counter()
    for i in range(0, n, CHUNK):
        total += float(x[i : i + CHUNK].sum())
        if args.track_memory:
            peak_anon = max(peak_anon, proc_status().get("RssAnon_mib", 0.0))
    t_touch = time.perf_counter() - t2
    wall = time.perf_counter() - t1
    cpu = time.process_time() - cpu0
    busy1 = machine_busy_s()
    sampler.__exit__()
    out = {
        "side": "relpos",
        "peak_rss_anon_mib": sampler.anon,
        "n_windows": n,
        "shape": list(x.shape),
        "dtype": str(x.dtype),
        "t_import_s": t_import,
        "t_load_s": t_load,
        "t_touch_s": t_touch,
        "t_total_s": wall,
        "cpu_s": cpu,
        "checksum": total,
        "cache": windows.info.get("cache"),
        "mne_imported_by_load": mne_imported,
        "mem_after_import": mem_after_import,
        "mem_end": proc_status(),
        "peak_rss_anon_sampled_mib": peak_anon or None,
    }
    if busy0 is not None and busy1 is not None:
        out["others_cores"] = max(0.0, (busy1 - busy0) - cpu) / max(wall, 1e-9)
    if args.probe:
        idx = _probe_indices(n)
        np.save(args.probe, x[idx].numpy())
        out["probe_indices"] = idx
    return out


def worker_braindecode(args) -> dict:
    t0 = time.perf_counter()
    import warnings

    import numpy as np
    import torch

    torch.set_num_threads(1)
    preimport()
    import mne
    from braindecode.datasets import BaseConcatDataset
    from braindecode.preprocessing import Preprocessor, create_fixed_length_windows, preprocess

    try:
        from braindecode.datasets import RawDataset
    except ImportError:  # braindecode < 1.0
        from braindecode.datasets import BaseDataset as RawDataset
    import braindecode

    mem_after_import = proc_status()
    t_import = time.perf_counter() - t0
    warnings.simplefilter("ignore")
    mne.set_log_level("ERROR")
    window = int(round(WINDOW_S * SFREQ))
    stride = int(round(args.stride * SFREQ))

    sampler = PeakSampler().__enter__()
    busy0, cpu0 = machine_busy_s(), time.process_time()
    t1 = time.perf_counter()
    if args.mode == "saved":
        from braindecode.datautil import load_concat_dataset

        ds = load_concat_dataset(args.saved_dir, preload=False, n_jobs=args.n_jobs)
    else:
        files = sorted(f for f in Path(args.data).glob("*.edf") if "hypnogram" not in f.name.lower())
        ds = BaseConcatDataset(
            [
                RawDataset(mne.io.read_raw(f, preload=False, verbose="error"), description={"path": str(f)})
                for f in files
            ]
        )
        preprocessors = [
            Preprocessor("pick", picks=args.channels.split(",")) if args.channels else Preprocessor("pick_types", eeg=True),
            Preprocessor("filter", l_freq=L_FREQ, h_freq=H_FREQ),
            Preprocessor("resample", sfreq=SFREQ),
        ]
        if args.mode == "save":
            preprocess(ds, preprocessors, save_dir=args.saved_dir, overwrite=True, n_jobs=args.n_jobs)
        else:
            preprocess(ds, preprocessors, n_jobs=args.n_jobs)
    t_pre = time.perf_counter() - t1
    wds = create_fixed_length_windows(
        ds,
        window_size_samples=window,
        window_stride_samples=stride,
        drop_last_window=True,
        n_jobs=args.n_jobs,
    )
    t_win = time.perf_counter() - t1 - t_pre
    n = len(wds)
    idx = set(_probe_indices(n)) if args.probe else set()
    probes = {}
    total = 0.0
    t2 = time.perf_counter()
    for i in range(n):
        X = torch.from_numpy(np.asarray(wds[i][0], dtype=np.float32))
        mean = X.mean(dim=-1, keepdim=True)
        std = X.std(dim=-1, unbiased=False, keepdim=True)
        z = (X - mean) / std.clamp_min(1e-12)
        total += float(z.sum())
        if i in idx:
            probes[i] = z.numpy().copy()
    t_iter = time.perf_counter() - t2
    wall = time.perf_counter() - t1
    cpu = time.process_time() - cpu0
    busy1 = machine_busy_s()
    sampler.__exit__()
    out = {
        "peak_rss_anon_mib": sampler.anon,
        "side": f"braindecode-{args.mode}",
        "braindecode_version": braindecode.__version__,
        "n_windows": n,
        "shape": [n, *list(wds[0][0].shape)] if n else [0],
        "t_import_s": t_import,
        "t_preprocess_s": t_pre,
        "t_windows_s": t_win,
        "t_load_s": t_pre + t_win,
        "t_touch_s": t_iter,
        "t_total_s": wall,
        "cpu_s": cpu,
        "checksum": total,
        "mem_after_import": mem_after_import,
        "mem_end": proc_status(),
    }
    if busy0 is not None and busy1 is not None:
        out["others_cores"] = max(0.0, (busy1 - busy0) - cpu) / max(wall, 1e-9)
    if args.probe:
        order = sorted(probes)
        np.save(args.probe, np.stack([probes[i] for i in order]))
        out["probe_indices"] = order
    return out


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run_worker(kind: str, extra: list[str], env_extra: dict, timeout_s: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out_path = fh.name
    env = dict(os.environ, **THREAD_ENV, **env_extra)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--out", out_path, *extra]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            raise RuntimeError(f"worker {kind} failed (exit {proc.returncode}):\n" + "\n".join(tail))
        return json.loads(Path(out_path).read_text())
    finally:
        Path(out_path).unlink(missing_ok=True)


def braindecode_env() -> dict:
    path = os.pathsep.join(p for p in (str(BRAINDECODE_ENV), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def braindecode_available() -> tuple[bool, str]:
    if not BRAINDECODE_ENV.is_dir():
        return False, f"{BRAINDECODE_ENV} does not exist (see docs/history.md for the install command)"
    code = "import braindecode, braindecode.preprocessing; print(braindecode.__version__)"
    env = dict(os.environ, **braindecode_env())
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return False, (proc.stderr.strip().splitlines() or ["import failed"])[-1]
    return True, proc.stdout.strip()


def run_once(label, kind, extra, env, args, r, before=None) -> dict:
    """One worker run after waiting for a quiet machine (``before`` runs right before the worker)."""
    quiet = wait_quiet(args.max_wait_s, args.idle_frac)
    if before is not None:
        before()
    res = run_worker(kind, extra, env, args.timeout_s)
    res["quiet"] = quiet
    res["windows_per_s"] = res["n_windows"] / res["t_total_s"]
    print(
        f"  {label} [{r + 1}/{args.repeats}]: {res['n_windows']} windows in {res['t_total_s']:.2f} s "
        f"({res['windows_per_s']:.1f}/s), VmHWM {res['mem_end'].get('VmHWM_mib', 0):.0f} MiB, "
        f"load {quiet['loadavg'][0]}, others {res.get('others_cores', float('nan')):.2f} cores"
        + ("" if quiet["quiet"] else f" (machine not quiet after {quiet['waited_s']:.0f} s)"),
        flush=True,
    )
    return res


def summarise_runs(label: str, runs: list[dict]) -> dict:
    med = statistics.median(r["t_total_s"] for r in runs)
    return {
        "label": label,
        "runs": runs,
        "n_windows": runs[0]["n_windows"],
        "median_total_s": med,
        "windows_per_s": runs[0]["n_windows"] / med,
        "median_load_s": statistics.median(r["t_load_s"] for r in runs),
        "median_touch_s": statistics.median(r["t_touch_s"] for r in runs),
        "median_import_s": statistics.median(r["t_import_s"] for r in runs),
        "median_with_imports_s": statistics.median(r["t_import_s"] + r["t_total_s"] for r in runs),
        "median_cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "peak_rss_mib": max(r["mem_end"].get("VmHWM_mib", 0.0) for r in runs),
        "rss_after_import_mib": max(r["mem_after_import"].get("VmRSS_mib", 0.0) for r in runs),
        "peak_rss_anon_mib": max(r.get("peak_rss_anon_mib", 0.0) for r in runs),
        "max_others_cores": max(r.get("others_cores", 0.0) for r in runs),
        "loadavg_1m": [r["quiet"]["loadavg"][0] for r in runs],
        "all_quiet": all(r["quiet"]["quiet"] for r in runs),
    }


def _fmt(v, digits=3):
    from _common import fmt

    return fmt(v, digits)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=12, help="EDF files in the data set (default 12)")
    p.add_argument("--copies", type=int, default=10, help="61-s copies concatenated per file (default 10)")
    p.add_argument("--strides", type=float, nargs="+", default=[30.0, 5.0], help="window strides, s")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-wait-s", type=float, default=120.0, help="longest wait for a quiet machine per run")
    p.add_argument("--idle-frac", type=float, default=0.9, help="quiet = CPUs at least this idle for 3 s")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per worker run")
    p.add_argument("--workdir", type=Path, default=None, help="keeps the data set between runs (default: temp)")
    p.add_argument("--no-braindecode", action="store_true")
    p.add_argument("--no-saved", action="store_true", help="skip braindecode's save_dir/load_concat_dataset row")
    p.add_argument("--out-stem", default=STEM)
    p.add_argument("--n-jobs", type=int, default=1,
                   help="processes on both sides (relpos modality.n_jobs, braindecode n_jobs; -1: every core)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="time these EDF files (hypnograms aside) instead of building the data set")
    p.add_argument("--first-only", action="store_true", help="only the first passes (no from-cache rows)")
    p.add_argument("--channels", default="", help="channel names, comma-separated, picked on both sides (default: EEG)")
    # worker mode
    p.add_argument("--worker", choices=["relpos", "braindecode"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--stride", type=float, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="first", choices=["first", "save", "saved"], help=argparse.SUPPRESS)
    p.add_argument("--saved-dir", help=argparse.SUPPRESS)
    p.add_argument("--probe", help=argparse.SUPPRESS)
    p.add_argument("--track-memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preimport", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        result = worker_relpos(args) if args.worker == "relpos" else worker_braindecode(args)
        Path(args.out).write_text(json.dumps(result))
        return 0

    import numpy as np
    from _common import machine_info, write_results

    own_tmp = None
    workdir = args.workdir
    if workdir is None:
        own_tmp = tempfile.mkdtemp(prefix="relpos-bench-eeg-")
        workdir = Path(own_tmp)
    workdir = workdir.resolve()
    data_dir = workdir / "data"
    print(f"building the data set in {data_dir} ...", flush=True)
    t0 = time.perf_counter()
    ds = build_dataset(data_dir, args.files, args.copies) if args.data_dir is None else describe_dataset(args.data_dir)
    data_dir = data_dir if args.data_dir is None else args.data_dir.resolve()
    print(
        f"  {ds['files']} EDF files x {ds['duration_s']:.0f} s = {ds['hours']:.2f} h, {ds['channels']} channels at "
        f"{ds['sfreq']:g} Hz, {ds['bytes'] / 2**20:.0f} MiB ({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    bd_ok, bd_version = (False, "skipped (--no-braindecode)") if args.no_braindecode else braindecode_available()
    print(f"braindecode: {bd_version if bd_ok else 'unavailable: ' + bd_version}", flush=True)

    machine = machine_info()
    machine["torch_threads"] = 1
    payload = {
        "machine": machine,
        "threads": f"1 per process (OMP/MKL/OPENBLAS_NUM_THREADS=1, torch.set_num_threads(1)); n_jobs={args.n_jobs} "
                   "on both sides",
        "n_jobs": args.n_jobs,
        "params": {"l_freq": L_FREQ, "h_freq": H_FREQ, "sfreq": SFREQ, "window_s": WINDOW_S, "strides_s": args.strides},
        "dataset": ds,
        "braindecode": {"available": bd_ok, "version_or_error": bd_version, "env": str(BRAINDECODE_ENV)},
        "repeats": args.repeats,
        "cases": [],
    }
    cache_root = workdir / "cache"
    for stride in args.strides:
        print(f"\nstride {stride:g} s:", flush=True)
        case = {"stride_s": stride, "rows": {}}
        base = ["--data", str(data_dir), "--stride", str(stride), "--n-jobs", str(args.n_jobs)]
        base += ["--channels", args.channels] if args.channels else []
        probe_rel = str(workdir / f"probe_relpos_{stride:g}.npy")
        probe_bd = str(workdir / f"probe_bd_{stride:g}.npy")
        saved_dir = workdir / "bd_saved"  # braindecode's preprocessing does not depend on the stride
        if bd_ok and not args.no_saved and not (workdir / "bd_saved.done").exists():
            shutil.rmtree(saved_dir, ignore_errors=True)
            saved_dir.mkdir(parents=True)
            print("  (braindecode: preprocess(save_dir=...) once, untimed)", flush=True)
            run_worker("braindecode", base + ["--mode", "save", "--saved-dir", str(saved_dir)], braindecode_env(),
                       args.timeout_s)
            (workdir / "bd_saved.done").write_text("")
        runs: dict[str, list] = {}
        labels = {
            "relpos_first": "relpos first pass",
            "relpos_cache_warm": "relpos from cache (page cache warm)",
            "relpos_cache_cold": "relpos from cache (evicted from page cache)",
            "braindecode": "braindecode",
            "braindecode_saved": "braindecode reloading its saved preprocessing",
        }
        # Repeats are interleaved (every pipeline once, then again) so that a change in the load of
        # the machine hits every pipeline alike.
        for r in range(args.repeats):
            cache_dir = cache_root / f"stride{stride:g}"
            shutil.rmtree(cache_dir, ignore_errors=True)
            cache_dir.mkdir(parents=True)
            env_cache = {"RELPOS_CACHE_DIR": str(cache_dir)}
            res = run_once(labels["relpos_first"], "relpos",
                           base + ["--preimport"] + (["--probe", probe_rel] if r == 0 else []), env_cache, args, r)
            if (res.get("cache") or {}).get("hit"):
                raise RuntimeError("the relpos first pass hit the cache although its cache folder was empty")
            runs.setdefault("relpos_first", []).append(res)
            case["cache_bytes"] = dir_size(cache_dir)
            if not args.first_only:
                res = run_once(labels["relpos_cache_warm"], "relpos", base + ["--track-memory"], env_cache, args, r)
                if not (res.get("cache") or {}).get("hit"):
                    raise RuntimeError(f"the relpos from-cache run missed the cache: {res.get('cache')}")
                runs.setdefault("relpos_cache_warm", []).append(res)
                res = run_once(labels["relpos_cache_cold"], "relpos", base + ["--track-memory"], env_cache, args, r,
                               before=lambda: evict_page_cache([cache_dir]))
                runs.setdefault("relpos_cache_cold", []).append(res)
            shutil.rmtree(cache_dir, ignore_errors=True)
            if bd_ok:
                res = run_once(labels["braindecode"], "braindecode",
                               base + ["--mode", "first"] + (["--probe", probe_bd] if r == 0 else []),
                               braindecode_env(), args, r)
                runs.setdefault("braindecode", []).append(res)
                if not args.no_saved:
                    res = run_once(labels["braindecode_saved"], "braindecode",
                                   base + ["--mode", "saved", "--saved-dir", str(saved_dir)], braindecode_env(), args, r)
                    runs.setdefault("braindecode_saved", []).append(res)
        for key, rs in runs.items():
            case["rows"][key] = summarise_runs(labels[key], rs)
        if bd_ok:
            case["bd_saved_bytes"] = dir_size(saved_dir) if saved_dir.exists() else None
            a, b = np.load(probe_rel), np.load(probe_bd)
            same = a.shape == b.shape
            case["agreement"] = {
                "probe_indices": runs["relpos_first"][0].get("probe_indices"),
                "same_shape": same,
                "max_abs_diff": float(np.abs(a - b).max()) if same else None,
                "n_windows_equal": case["rows"]["relpos_first"]["n_windows"] == case["rows"]["braindecode"]["n_windows"],
            }
            print(f"  agreement relpos vs braindecode: {case['agreement']}", flush=True)
        payload["cases"].append(case)

    markdown = render(payload)
    md_path, json_path = write_results(args.out_stem, markdown, payload)
    print("\n" + markdown)
    print(f"wrote {md_path} and {json_path}")
    if own_tmp:
        shutil.rmtree(own_tmp, ignore_errors=True)
    return 0


def render(payload: dict) -> str:
    from _common import markdown_table

    ds = payload["dataset"]
    m = payload["machine"]
    lines = [
        "# EEG data pipeline: EDF files to normalised tensors (relpos `eeg` vs braindecode)",
        "",
        f"Date {m['date']}; {m['cpu']}, {m['cpu_count']} cores; Python {m['python']}, torch {m['torch']}; "
        f"braindecode {payload['braindecode']['version_or_error'] if payload['braindecode']['available'] else 'not available: ' + payload['braindecode']['version_or_error']}.",
        f"Threads: {payload['threads']}.",
        f"Data: {ds['files']} EDF files of {ds['duration_s']:.0f} s "
        f"({str(ds['copies']) + ' × the 61-s EEGMMIDB sample' if 'copies' in ds else ds['folder']}), "
        f"{ds['channels']} EEG channels at {ds['sfreq']:g} Hz, {ds['hours']:.2f} h in all, "
        f"{ds['bytes'] / 2**20:.0f} MiB of EDF.",
        "Parameters: band-pass 0.1–30 Hz, resample to 100 Hz, 30-s windows, per-window per-channel z-score. "
        f"Median of {payload['repeats']} runs, each in a fresh process; times include touching every window "
        "and exclude imports.",
        "Goal: relpos first pass ≥ 1× braindecode, relpos from cache ≥ 10× braindecode.",
        "Columns: *s (median)* is loading plus touching every window, imports excluded (both first-pass sides "
        "import MNE and SciPy before the timer); *windows/s* = windows / that time; *peak RSS* is the largest "
        "VmHWM of the runs, *RSS after imports* the process's VmRSS before loading (torch, relpos or braindecode); "
        "*peak anon RSS* is the largest anonymous RSS sampled every 5 ms while loading and touching (VmHWM also "
        "counts the page cache behind relpos's memory map, which the kernel can reclaim); "
        "*s incl. imports* is a fresh process's time from its first import to its last window (the from-cache "
        "process never needs MNE or SciPy).",
    ]
    for case in payload["cases"]:
        rows = case["rows"]
        bd = rows.get("braindecode")
        bd_wps = bd["windows_per_s"] if bd else None
        header = [
            "pipeline", "windows", "s (median)", "windows/s", "vs braindecode", "goal", "met?",
            "peak RSS (VmHWM)", "peak anon RSS", "RSS after imports", "s incl. imports",
        ]
        table = []
        spec = [
            ("relpos first pass (empty cache)", "relpos_first", 1.0),
            ("relpos from cache, page cache warm", "relpos_cache_warm", 10.0),
            ("relpos from cache, evicted from page cache", "relpos_cache_cold", 10.0),
            ("braindecode `preprocess` + `create_fixed_length_windows`", "braindecode", None),
            ("braindecode reloading its saved preprocessing (info)", "braindecode_saved", None),
        ]
        for name, key, goal in spec:
            row = rows.get(key)
            if row is None:
                continue
            speed = row["windows_per_s"] / bd_wps if bd_wps else None
            table.append(
                [
                    name,
                    row["n_windows"],
                    _fmt(row["median_total_s"]),
                    _fmt(row["windows_per_s"]),
                    f"{_fmt(speed)}×" if speed is not None else "n/a",
                    f"≥{goal:g}×" if goal else "",
                    ("yes" if speed >= goal else "no") if (goal and speed is not None) else "",
                    f"{row['peak_rss_mib']:.0f} MiB",
                    f"{row['peak_rss_anon_mib']:.0f} MiB",
                    f"{row['rss_after_import_mib']:.0f} MiB",
                    _fmt(row["median_with_imports_s"]),
                ]
            )
        lines += ["", f"## Stride {case['stride_s']:g} s", "", markdown_table(header, table), ""]
        warm = rows.get("relpos_cache_warm")
        first = rows["relpos_first"]
        if warm is None:  # --first-only
            lines.append(f"relpos first pass: load {_fmt(first['median_load_s'])} s + touch {_fmt(first['median_touch_s'])} s.")
        else:
            anon = warm["peak_rss_anon_mib"]
            after_import = max(r["mem_after_import"].get("VmRSS_mib", 0) for r in warm["runs"])
            anon_import = max(r["mem_after_import"].get("RssAnon_mib", 0) for r in warm["runs"])
            lines.append(
                f"Cache on disk: {case['cache_bytes'] / 2**20:.0f} MiB. From cache, iterating all windows in chunks of "
                f"{CHUNK}: VmHWM {warm['peak_rss_mib']:.0f} MiB (RSS after imports {after_import:.0f} MiB), "
                f"peak anonymous RSS {anon:.0f} MiB (after imports: {anon_import:.0f} MiB); the rest of VmHWM is file-backed page cache of the memory map, "
                "which the kernel reclaims under pressure. Load from cache imported MNE: "
                f"{any(r.get('mne_imported_by_load') for r in warm['runs'])}."
            )
            lines.append(
                f"relpos first pass: load {_fmt(first['median_load_s'])} s + touch {_fmt(first['median_touch_s'])} s; "
                f"from cache: load {_fmt(warm['median_load_s'])} s + touch {_fmt(warm['median_touch_s'])} s."
            )
        if bd:
            lines.append(
                f"braindecode: preprocess + windows {_fmt(bd['median_load_s'])} s, iterate + z-score "
                f"{_fmt(bd['median_touch_s'])} s."
            )
        if "agreement" in case:
            ag = case["agreement"]
            lines.append(
                f"Same windows on both sides: counts equal {ag['n_windows_equal']}; windows {ag['probe_indices']} "
                + (f"differ by at most {ag['max_abs_diff']:.2g} (z-scored units)." if ag["same_shape"]
                   else "have different shapes (not the same channels).")
            )
        quiet = all(r["all_quiet"] for r in rows.values())
        loads = [v for r in rows.values() for v in r["loadavg_1m"]]
        others = max(r["max_others_cores"] for r in rows.values())
        lines.append(
            f"Machine: load average (1 min) {min(loads):.2f}–{max(loads):.2f} at the start of the runs; other "
            f"processes kept at most {others:.2f} cores busy during a run; "
            + ("every run started on a quiet machine." if quiet else "some runs started before the machine was quiet.")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
