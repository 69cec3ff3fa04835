"""The pictures of docs/eeg_space.md: channel tokens on the scalp and in (electrode, time).

Each picture is drawn from what relpos computes (the eeg modality with ``modality.space=montage`` opening the
three recordings of ``../shared/data/eeg``, :func:`relpos.space.sample_channel_tokens` drawing tokens as PART
does, :func:`relpos.geometry.relative_transform` giving a pair's target), nothing is drawn by hand.

    OMP_NUM_THREADS=1 .venv/bin/python bench/eeg_space_figures.py      # writes docs/figures/eeg-space-*.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, data_root  # noqa: E402

FIGURES = REPO / "docs" / "figures"


def head_outline(ax) -> None:
    """A head seen from above, 1 head radius round, nose up (MNE's y towards the nasion)."""
    circle = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(circle), np.sin(circle), color="0.5", lw=1)
    ax.plot([-0.12, 0, 0.12], [0.99, 1.12, 0.99], color="0.5", lw=1)
    ax.set_aspect("equal")
    ax.set_xlim(-1.35, 1.35)
    ax.set_ylim(-1.35, 1.3)
    ax.axis("off")


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import relpos
    from relpos.geometry import relative_transform
    from relpos.space import present_channels, sample_channel_tokens
    from relpos.training import build_modality

    config = relpos.resolve_config(modality="eeg", pretext="part", overrides=[
        f"data={data_root() / 'eeg'}", "modality.space=montage"])
    windows = build_modality(config).load(config.data)
    groups = np.asarray(windows.groups)
    names = {"eegmmidb_S001R02": "EEGMMIDB run, 64 electrodes", "nap": "nap, six 10-20 electrodes",
             "SC4001E0-PSG": "Sleep-EDF night, Fpz-Cz and Pz-Oz"}
    first = {g: int(np.flatnonzero(groups == g)[0]) for g in names}
    generator = torch.Generator().manual_seed(0)

    # 1. the three montages, 40 tokens of one window each, and one PART pair
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4), layout="constrained")
    for ax, (group, title) in zip(axes, names.items()):
        head_outline(ax)
        positions = windows.positions[first[group]][None]
        present = present_channels(positions)[0]
        place = positions[0, present].numpy()
        contract = {c["name"]: c for c in windows.info["channel_contract"]["channels"]}
        ax.scatter(place[:, 0], place[:, 1], s=18, color="0.75", zorder=2)
        channel, _, boxes = sample_channel_tokens(positions, windows.extent, (100.0,), 40, generator)
        counts = np.bincount(channel[0].numpy(), minlength=positions.shape[1])
        used = np.flatnonzero(counts)
        ax.scatter(positions[0, used, 0], positions[0, used, 1], s=30 + 25 * counts[used], color="tab:blue",
                   alpha=0.7, zorder=3, label="tokens (area: how many of the 40)")
        ref, tgt = 0, int(np.flatnonzero(channel[0].numpy() != channel[0, 0].item())[0])
        theta = relative_transform(boxes.gather(torch.tensor([[ref]])), boxes.gather(torch.tensor([[tgt]])))[0, 0]
        a, b = boxes.center[0, ref, :2].numpy(), boxes.center[0, tgt, :2].numpy()
        ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="->", color="tab:red", lw=2), zorder=4)
        ax.set_title(f"{title}\n(Δx, Δy, Δz, Δt) = ({theta[0]:+.2f}, {theta[1]:+.2f}, {theta[2]:+.2f}, "
                     f"{theta[3]:+.1f})", fontsize=9)
        if group == "SC4001E0-PSG":
            for name in windows.info["channel_sets"][group]:
                c = contract[name]
                ax.text(c["position"][0] + 0.08, c["position"][1], name.replace("EEG ", "") + "\n(midpoint)",
                        fontsize=7, va="center")
    axes[0].legend(loc="lower left", fontsize=7, frameon=False)
    figure.suptitle("Channel tokens on the scalp (positions in head radii, seen from above; red: one PART pair)",
                    fontsize=10)
    figure.savefig(FIGURES / "eeg-space-scalp.png", dpi=100)
    plt.close(figure)

    # 2. the same tokens in (electrode, time): the nap's window
    index = first["nap"]
    positions = windows.positions[index][None]
    present = present_channels(positions)[0]
    channel, time_boxes, _ = sample_channel_tokens(positions, windows.extent, (100.0,), 40,
                                                   torch.Generator().manual_seed(1))
    x = windows.x[torch.tensor([index])][0, present].numpy()
    ch_names = windows.info["channel_sets"]["nap"]
    figure, ax = plt.subplots(figsize=(12, 3.6), layout="constrained")
    seconds = np.arange(x.shape[1]) / 100.0
    for row in range(x.shape[0]):
        ax.plot(seconds, row - 0.12 * x[row] / max(np.abs(x[row]).max(), 1e-9) * 3, color="0.4", lw=0.4)
    for c, box in zip(channel[0].tolist(), time_boxes.center[0, :, 0].tolist()):
        ax.add_patch(plt.Rectangle(((box - 50) / 100.0, c - 0.42), 1.0, 0.84, color="tab:blue", alpha=0.25))
    ax.set_yticks(range(len(ch_names)), ch_names)
    ax.invert_yaxis()
    ax.set_xlabel("time in the window (s)")
    ax.set_title("The nap's first 30-s window: 40 tokens, each one electrode over 1 s (blue); a token's box is "
                 "(x, y, z) of its electrode and its time", fontsize=10)
    figure.savefig(FIGURES / "eeg-space-tokens.png", dpi=100)
    plt.close(figure)
    print(FIGURES / "eeg-space-scalp.png", FIGURES / "eeg-space-tokens.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
