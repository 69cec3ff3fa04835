"""PART training throughput and model FLOP utilisation (MFU) on one CUDA GPU.

ViT-B/16 at 224 px by default (``EncoderConfig(dim=768, depth=12, heads=12)``, 16-px patches, 196
off-grid patches, cross-attention head), bf16 autocast, AdamW with gradient clipping, one step
exactly as ``relpos.training.train`` runs it (``PART.forward`` with its ``.item()`` log value, the
``float(loss)`` check, ``zero_grad``, ``backward``, ``clip_grad_norm_``, ``step``). The batch lives
on the GPU (no host-to-device copy of images); boxes and pairs are drawn from a CPU generator and
moved to the GPU, as in training.

MFU = (FLOPs of one forward + backward, counted once with ``torch.utils.flop_counter.FlopCounterMode``)
× steps/s ÷ peak. FlopCounterMode counts matmuls, convolutions and attention; the optimiser's
element-wise work and ``grid_sample`` are not counted (the usual MFU convention).

Run from the repository root::

    .venv/bin/python bench/bench_gpu.py                          # prints "no CUDA device; skipping" on CPU
    .venv/bin/python bench/bench_gpu.py --batch 128 --n-pairs 512 --peak-tflops 989
    .venv/bin/python bench/bench_gpu.py --compile

``--peak-tflops`` is the dense bf16 peak of the GPU: 989 for H100 SXM (the default), 756 for H100
PCIe, 989 for H200, 312 for A100.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext

import torch


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n-pairs", type=int, default=2048, help="(reference, target) pairs per image")
    p.add_argument("--image", type=int, default=224, help="image side in pixels")
    p.add_argument("--patch", type=int, default=16, help="patch side in pixels")
    p.add_argument("--n-patches", type=int, default=0, help="patches per image (0 = grid count, 196 at 224/16)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head", default="cross_attention", choices=["cross_attention", "pairwise_mlp", "mlp"])
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    p.add_argument("--no-amp", action="store_true", help="float32 instead of bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the PART module")
    p.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) instead of the training loop's default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-cpu", action="store_true", help="run on CPU anyway (smoke test of this script)")
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("no CUDA device; skipping")
        return 0

    from torch.utils.flop_counter import FlopCounterMode

    from _common import fmt, machine_info, markdown_table, write_results
    from relpos.encoders.vit import EncoderConfig
    from relpos.modality import Windows
    from relpos.optim import param_groups
    from relpos_modalities.image import ImageConfig, ImageModality
    from relpos_plugins.part import PART, PARTConfig

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_dtype = None if args.no_amp else torch.bfloat16
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext

    modality = ImageModality(ImageConfig(image_size=args.image, patch_size=args.patch))
    shape_only = Windows(x=torch.zeros(1, 3, args.image, args.image))  # extent and channels only
    torch.manual_seed(args.seed)
    pretext = PART(
        PARTConfig(n_pairs=args.n_pairs, n_patches=args.n_patches, head=args.head),
        modality,
        EncoderConfig(dim=args.dim, depth=args.depth, heads=args.heads),
        shape_only,
    ).to(device)
    pretext.train()
    opt_kwargs = {"fused": True} if args.fused_adamw else {}
    optimizer = torch.optim.AdamW(param_groups(pretext, 0.05), lr=1e-4, betas=(0.9, 0.95), **opt_kwargs)
    model = torch.compile(pretext) if args.compile else pretext
    generator = torch.Generator().manual_seed(args.seed)
    # Two resident batches in [-1, 1], alternated.
    data = [torch.rand(args.batch, 3, args.image, args.image, device=device) * 2 - 1 for _ in range(2)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(i: int) -> float:
        with autocast():
            loss, _ = model({"x": data[i % 2]}, generator)
        value = float(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pretext.parameters(), 1.0)
        optimizer.step()
        return value

    # FLOPs of one forward + backward (uncompiled module; same arithmetic).
    with FlopCounterMode(display=False) as counter:
        with autocast():
            loss, _ = pretext({"x": data[0]}, generator)
        loss.backward()
    counted = counter.get_total_flops()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    # FlopCounterMode knows the CUDA attention kernels (flash, efficient, cuDNN) but not the CPU one;
    # when no attention op was counted, add the attention matmuls analytically (fwd QK^T + AV is
    # 4·B·S_q·S_k·dim, backward twice that): encoder self-attention over N + 1 tokens, and the
    # cross-attention head's n_pairs queries over N keys.
    attention_counted = any("attention" in k for k in by_op)
    n_tok = pretext.n_patches + 1
    attention_analytic = 3 * 4 * args.batch * args.dim * (
        args.depth * n_tok * n_tok + (args.n_pairs * pretext.n_patches if args.head == "cross_attention" else 0)
    )
    flops_per_step = counted if attention_counted else counted + attention_analytic
    optimizer.zero_grad(set_to_none=True)

    for i in range(args.warmup):
        step(i)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    last = float("nan")
    for i in range(args.steps):
        last = step(i)
    sync()
    elapsed = time.perf_counter() - t0

    steps_per_s = args.steps / elapsed
    achieved_tflops = flops_per_step * steps_per_s / 1e12
    mfu = achieved_tflops / args.peak_tflops
    result = {
        "machine": machine_info(),
        "args": vars(args),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "n_patches": pretext.n_patches,
        "parameters": sum(p.numel() for p in pretext.parameters()),
        "flops_per_step": flops_per_step,
        "flops_by_op": by_op,
        "flops_counted": counted,
        "attention_counted_by_flop_counter": attention_counted,
        "attention_flops_analytic": attention_analytic,
        "steps_per_s": steps_per_s,
        "images_per_s": steps_per_s * args.batch,
        "ms_per_step": 1e3 / steps_per_s,
        "achieved_tflops": achieved_tflops,
        "mfu": mfu,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "last_loss": last,
    }
    header = ["device", "model", "batch", "N", "n_pairs", "precision", "steps/s", "images/s",
              "GFLOP/step", "TFLOP/s", "peak TFLOP/s", "MFU"]
    row = [result["device"], f"dim {args.dim}, depth {args.depth}, heads {args.heads}, {args.head}",
           args.batch, pretext.n_patches, args.n_pairs, "bf16 autocast" if amp_dtype else "fp32",
           f"{steps_per_s:.2f}", f"{result['images_per_s']:.0f}", fmt(flops_per_step / 1e9),
           fmt(achieved_tflops), f"{args.peak_tflops:g}", f"{fmt(100 * mfu)} %"]
    note = "" if attention_counted else ", attention FLOPs added analytically"
    mem = note + (f", peak memory {result['peak_memory_gib']:.1f} GiB" if result["peak_memory_gib"] is not None else "")
    markdown = (f"PART training throughput, {args.warmup} warm-up + {args.steps} timed steps"
                f"{', torch.compile' if args.compile else ''}{mem}; torch {torch.__version__}, "
                f"{result['machine']['date']}\n\n" + markdown_table(header, [row]) + "\n")
    print(markdown)
    md, js = write_results("gpu" if device.type == "cuda" else "gpu_cpu_smoke", markdown, result, args.out)
    print(f"Wrote {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
