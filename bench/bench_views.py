"""Share of one PW-Self training step (CPU) spent on views: sampling, extraction, augmentation, matching.

The real ``PWSelf`` pretext (``relpos_plugins.pw_self``) is built on synthetic data of the right
shapes, and one training step (forward, backward, AdamW, EMA update) is timed in one piece. The
view work of that step is then replayed phase by phase with the same objects:

============  ========================================================================================
sampling      ``sample_views`` for the global and the local views (``PWSelf.sample``)
extraction    ``extract_view_tokens``: every token of every view from one resampling
augment       the modality's per-view recipe and PW-Self's per-patch recipe
matching      ``match_tokens`` for every (teacher view, student view) pair of the step
============  ========================================================================================

and the same matching is timed with ``match_tokens_loop``, the per-sample Python reference (what a
per-sample loop over the batch costs; the official PW-Self code avoids it by giving every image of a
batch the same crop). Goal: the four phases ≤ 10 % of a step.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_views.py                  # image and eeg cases
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_views.py --cases image --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, machine_info, markdown_table, write_results  # noqa: E402

from relpos.config import resolve_config  # noqa: E402
from relpos.modality import Windows  # noqa: E402
from relpos.training import _param_groups, build_modality, build_pretext  # noqa: E402
from relpos.views import extract_view_tokens, match_tokens, match_tokens_loop  # noqa: E402

#: name → (modality, overrides, window shape (C, *extent))
CASES = {
    # MNIST-sized digits, 4-px patches: 7x7 tokens per global view, 3x3 per local view
    "image": ("image", ["modality.image_size=28", "modality.patch_size=4", "modality.color=grey"], (1, 28, 28)),
    # a 30-s, 2-channel sleep epoch at 100 Hz, 1-s patches (native-resolution views)
    "eeg": ("eeg", ["modality.window_s=30", "modality.patch_s=1", "modality.sfreq=100"], (2, 3000)),
}
ENCODER = ["encoder.dim=192", "encoder.depth=6", "encoder.heads=3"]


def build(case: str, batch_size: int, n_local: int):
    modality_name, overrides, shape = CASES[case]
    config = resolve_config(
        modality=modality_name, pretext="pw-self",
        overrides=[*overrides, *ENCODER, f"pretext.n_local={n_local}", "pretext.out_dim=1024",
                   "pretext.head_hidden_dim=512", f"train.batch_size={batch_size}"],
    )
    modality = build_modality(config)
    if case == "eeg":
        modality.restore({"sfreq": 100.0})
    x = torch.randn(64, *shape)
    if case == "image":
        x = x.clamp(-1, 1)
    windows = Windows(x=x, info={"sfreq": 100.0})
    pretext = build_pretext(config, modality, windows)
    return pretext, windows


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_case(case: str, steps: int, batch_size: int, n_local: int) -> dict:
    pretext, windows = build(case, batch_size, n_local)
    optimizer = torch.optim.AdamW(_param_groups(pretext, 0.04), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    pretext.train()

    def one_step():
        index = torch.randint(0, len(windows), (batch_size,), generator=generator)
        pretext.set_progress(0, 100)
        loss, _ = pretext({"x": windows.x[index]}, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pretext.parameters(), 3.0)
        optimizer.step()
        pretext.after_step(1)

    one_step()  # warm-up
    step_s = timed(one_step, steps)

    x = windows.x[:batch_size]
    groups = pretext.sample(batch_size, generator, x.device)
    patches = extract_view_tokens(x, groups)
    pairs = [(i, g, v) for i in range(groups[0].n_views) for g, views in enumerate(groups)
             for v in range(views.n_views) if not (g == 0 and v == i)]

    def matching():
        for i, g, v in pairs:
            match_tokens(groups[0].select(i), groups[g].select(v))

    def matching_loop():
        for i, g, v in pairs:
            match_tokens_loop(groups[0].select(i), groups[g].select(v))

    phases = {
        "sampling": timed(lambda: pretext.sample(batch_size, generator, x.device), steps),
        "extraction": timed(lambda: extract_view_tokens(x, groups), steps),
        "augment": timed(lambda: pretext.augment_patches(pretext.augment_views(patches, generator), generator), steps),
        "matching": timed(matching, steps),
    }
    loop_s = timed(matching_loop, max(1, steps // 2))
    views_s = sum(phases.values())
    return {
        "case": case, "batch_size": batch_size, "n_local": n_local, "step_s": step_s, "phases_s": phases,
        "views_share_pct": 100 * views_s / step_s, "matching_loop_s": loop_s,
        "matching_loop_share_pct": 100 * loop_s / step_s, "pairs_per_step": len(pairs),
        "tokens": [g.n_tokens for g in groups],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-local", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    results = [run_case(c, args.steps, args.batch_size, args.n_local) for c in args.cases]
    header = ["case", "step (s)", "sampling", "extraction", "augment", "matching", "views share",
              "matching, per-sample loop", "loop share"]
    rows = []
    for r in results:
        p = r["phases_s"]
        rows.append([
            r["case"], fmt(r["step_s"]), *(f"{1000 * p[k]:.1f} ms" for k in ("sampling", "extraction", "augment", "matching")),
            f"{r['views_share_pct']:.1f} %", f"{1000 * r['matching_loop_s']:.1f} ms", f"{r['matching_loop_share_pct']:.1f} %",
        ])
    info = machine_info()
    markdown = (
        f"PW-Self step share of the view work (batch {args.batch_size}, 2 global + {args.n_local} local views, "
        f"ViT dim 192 depth 6, {args.threads} thread(s), median of {args.steps})\n\n" + markdown_table(header, rows)
    )
    print(markdown)
    write_results("bench_views", markdown, {"machine": info, "args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
