"""`relpos show`: every picture is a real PNG, and its numbers match a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import relpos
from relpos.checkpoint import atomic_torch_save, checkpoint_path, load_checkpoint
from relpos.cli import main
from relpos.errors import RelposError
from relpos.show import available_figures, show

from conftest import EEG_SAMPLE, train_tiny_part


@pytest.fixture(scope="module")
def eeg_run(tmp_path_factory):
    """A tiny PART run on the bundled EEG with the pairwise head (whose weights the tests set)."""
    # One thread for speed, restored afterwards: a later test compares an in-process run with a
    # subprocess bit for bit, which holds only at the same number of threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny_part(tmp_path_factory.mktemp("show") / "eeg", extra=["pretext.head=pairwise_mlp"])
    finally:
        torch.set_num_threads(threads)


def _assert_png(path, min_width=300, min_height=150):
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
    assert min_width <= width <= 3000 and min_height <= height <= 6000, (path, img.size)


def _set_pairwise_head(run_dir, weight_ref, bias):
    """Fix the head to θ̂(i→j) = W·x_i − W·x_j + b (so θ̂(i→j) + θ̂(j→i) = 2b exactly)."""
    ckpt = checkpoint_path(run_dir)
    state = load_checkpoint(ckpt, resume=True)
    state["model"]["head.out.weight"] = torch.cat([weight_ref, -weight_ref], dim=1)
    state["model"]["head.out.bias"] = bias
    atomic_torch_save(state, ckpt)


def test_train_writes_the_loss_plot(eeg_run):
    _assert_png(eeg_run / "plots" / "loss.png")


def test_show_writes_every_picture_as_png(eeg_run, tmp_path):
    result = show(eeg_run, out_dir=tmp_path, n_samples=2)
    assert [p.name for p in result.paths] == [
        "loss.png", "attention.png", "reconstruction.png", "uncertainty.png", "symmetry.png"
    ]
    for path in result.paths:
        _assert_png(path)
    assert set(result.numbers) == {"attention", "reconstruction", "uncertainty", "symmetry"}


def test_antisymmetry_error_by_hand():
    from relpos_plugins.part_figures import antisymmetry_error

    theta = torch.full((1, 3, 3, 1), 7.0)  # the diagonal (a patch to itself) is ignored
    theta[0, 0, 1], theta[0, 1, 0] = 1.0, -1.0  # |1 - 1| = 0 for (0,1) and (1,0)
    theta[0, 0, 2], theta[0, 2, 0] = 2.0, 1.0   # |2 + 1| = 3 for (0,2) and (2,0)
    theta[0, 1, 2], theta[0, 2, 1] = 0.5, 0.0   # 0.5 for (1,2) and (2,1)
    # six ordered pairs: (0 + 0 + 3 + 3 + 0.5 + 0.5) / 6
    assert antisymmetry_error(theta, 1).tolist() == pytest.approx([7 / 6])
    two_axes = torch.zeros(1, 2, 2, 2)
    two_axes[0, 0, 1] = torch.tensor([1.0, 2.0])
    two_axes[0, 1, 0] = torch.tensor([-1.0, -1.0])  # sum (0, 1): norm 1 for both ordered pairs
    assert antisymmetry_error(two_axes, 2).tolist() == pytest.approx([1.0])


def test_spread_scores_by_hand():
    from relpos_plugins.part_figures import spread_scores

    # centres[s, r, t, d]: where reference r puts target t; 3 patches on one axis, patch size 2
    centres = torch.zeros(1, 3, 3, 1)
    centres[0, 1, 0], centres[0, 2, 0] = 2.0, 4.0     # target 0: from 2 and 4, mean 3, RMS 1 → 0.5 patches
    centres[0, 0, 1], centres[0, 2, 1] = 5.0, 5.0     # target 1: both agree → 0
    centres[0, 0, 2], centres[0, 1, 2] = 0.0, 8.0     # target 2: RMS 4 → 2 patches
    centres[0, 0, 0] = centres[0, 1, 1] = centres[0, 2, 2] = 100.0  # a patch placing itself: ignored
    assert spread_scores(centres, [2.0])[0].tolist() == pytest.approx([0.5, 0.0, 2.0])


def test_symmetry_and_uncertainty_numbers_of_fixed_weights(eeg_run, tmp_path):
    """With θ̂(i→j) = W(x_i − x_j) + b the antisymmetry error is 2‖b‖ whatever W and the data; with
    W = 0 every reference places a target at its own centre + b·s, so a target's spread is the
    standard deviation of the other grid cells' indices."""
    generator = torch.Generator().manual_seed(3)
    bias = torch.tensor([0.3])
    _set_pairwise_head(eeg_run, torch.randn(1, 32, generator=generator), bias)
    numbers = show(eeg_run, "symmetry", out_dir=tmp_path, n_samples=2).numbers["symmetry"]
    assert numbers["antisymmetry_error"] == pytest.approx(0.6, abs=1e-5)
    assert numbers["target_norm"] > 1  # the true offsets of a 30-patch grid, for scale

    _set_pairwise_head(eeg_run, torch.zeros(1, 32), bias)
    numbers = show(eeg_run, "uncertainty", out_dir=tmp_path, n_samples=1).numbers["uncertainty"]
    extent = load_checkpoint(checkpoint_path(eeg_run))["data_info"]["extent"][0]
    cells = int(extent // 100)  # 1-s patches at 100 Hz
    by_hand = [np.std(np.delete(np.arange(cells), t)) for t in range(cells)]
    assert numbers["mean_spread_patches"] == pytest.approx(np.mean(by_hand), rel=1e-5)
    central = int(np.argmin(np.abs((np.arange(cells) + 0.5) * 100 - extent / 2)))  # first of a tie
    assert numbers["target_spread_patches"] == pytest.approx(by_hand[central], rel=1e-5)


def test_attention_of_zeroed_queries_and_keys_is_uniform(eeg_run, tmp_path):
    """q = k = 0 in the last block: the CLS token attends 1/(N + 1) to itself and to every patch."""
    ckpt = checkpoint_path(eeg_run)
    state = load_checkpoint(ckpt, resume=True)
    for key in ("encoder.blocks.0.attn.qkv.weight", "encoder.blocks.0.attn.qkv.bias"):
        state["model"][key] = torch.zeros_like(state["model"][key])
    atomic_torch_save(state, ckpt)
    numbers = show(eeg_run, "attention", out_dir=tmp_path, n_samples=1).numbers["attention"]
    cells = int(state["data_info"]["extent"][0] // 100)  # 1-s patches at 100 Hz
    assert numbers["patch_share"] == pytest.approx(cells / (cells + 1), rel=1e-6)
    assert numbers["entropy_ratio"] == pytest.approx(1.0, rel=1e-6)
    _assert_png(tmp_path / "attention.png")


def test_cli_show_prints_paths(eeg_run, tmp_path, capsys):
    assert main(["show", str(eeg_run), "symmetry", "--out", str(tmp_path), "--samples", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "symmetry.png")
    assert "antisymmetry_error" in err
    _assert_png(tmp_path / "symmetry.png")


# -- bad input: one sentence, exit 2, nothing written ------------------------------------------------
def _one_sentence_exit_2(args, capsys):
    capsys.readouterr()  # what training a fixture printed
    assert main(args) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("relpos: error: ") and "Traceback" not in err, err
    return lines[0]


def test_run_without_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,loss\n1,2.0\n")
    line = _one_sentence_exit_2(["show", str(run), "symmetry", "--out", str(tmp_path / "plots")], capsys)
    assert "has no checkpoint" in line
    assert not (tmp_path / "plots").exists()


def test_picture_the_pretext_cannot_draw(eeg_run, tmp_path, capsys):
    line = _one_sentence_exit_2(["show", str(eeg_run), "saliency", "--out", str(tmp_path / "p")], capsys)
    assert "cannot draw 'saliency'" in line
    assert "'loss', 'attention', 'reconstruction', 'uncertainty', 'symmetry'" in line
    assert not (tmp_path / "p").exists()


def test_pretext_without_figures_lists_loss_only():
    from relpos.show import _check_what

    dino = relpos.get_pretext("dino")
    assert available_figures(dino) == ("loss",)
    assert available_figures(dino, "vit") == ("loss", "attention")  # any ViT's attention
    assert available_figures(dino, "timm:resnet18") == ("loss",)
    with pytest.raises(RelposError, match=r"Pretext 'dino' cannot draw 'symmetry'; the pictures it can draw are 'loss'\."):
        _check_what("symmetry", "dino", dino)


def test_data_of_another_modality(shared_data, tmp_path, capsys, make_image_folder):
    mnist = shared_data / "images" / "mnist.npz"
    if not mnist.is_file():
        pytest.skip(f"{mnist} not found")
    run = train_tiny_part(tmp_path / "mnist", modality="image", data=mnist, extra=["modality.max_images=16"])
    line = _one_sentence_exit_2(
        ["show", str(run), "reconstruction", "--data", str(EEG_SAMPLE), "--out", str(tmp_path / "p")], capsys
    )
    assert "cannot be opened as 'image' data" in line and str(EEG_SAMPLE) in line
    assert not (tmp_path / "p").exists()
    colour = make_image_folder("colour")  # images too, but RGB where the run saw grey digits
    line = _one_sentence_exit_2(
        ["show", str(run), "symmetry", "--data", str(colour), "--out", str(tmp_path / "p")], capsys
    )
    assert "gives windows of 3 channels" in line and "trained on 1 channel × [32, 32]" in line
    assert not (tmp_path / "p").exists()
    # the image figures themselves, drawn from the run's own data
    result = show(run, "reconstruction", out_dir=tmp_path / "ok", n_samples=2)
    _assert_png(result.paths[0])
    assert math.isfinite(result.numbers["reconstruction"]["placement_error_patches"])


def test_bad_samples_option(eeg_run, capsys):
    line = _one_sentence_exit_2(["show", str(eeg_run), "--samples", "0"], capsys)
    assert "'--samples'" in line and "'0'" in line


def test_a_loss_plot_that_cannot_be_drawn_never_fails_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "plots").write_text("a file where the plots folder would go")
    train_tiny_part(out, extra=["pretext.head=pairwise_mlp"])
    assert (out / "checkpoints" / "last.pt").is_file()  # the run finished and kept its checkpoint
    err = capsys.readouterr().err
    assert "relpos: warning: the loss plot could not be drawn" in err


def test_loss_panels_use_a_log_scale_only_where_it_helps():
    from relpos.show import _wants_log_scale

    assert _wants_log_scale([100.0, 50.0, 2.0])        # a factor of 50
    assert not _wants_log_scale([3.0, 2.0, 1.0])       # a factor of 3
    assert not _wants_log_scale([10.0, -1.0, 0.001])   # not all positive
    assert not _wants_log_scale([float("nan")])


def test_show_rebuilds_a_run_whose_memory_is_sized_by_its_windows(tmp_path, capsys):
    """SOVE sizes its CLS memory by the windows it trained on (the bundled run: 7) and refuses one window:
    `relpos show` rebuilds it on as many windows as the checkpoint records, and draws its attention."""
    run = tmp_path / "sove"
    with torch.random.fork_rng(devices=[]):
        assert main(["train", "--modality", "eeg", "--pretext", "sove", "--out", str(run), "--no-progress",
                     "--set", "train.steps=1", "--set", "train.batch_size=4", "--set", "encoder.dim=32",
                     "--set", "encoder.depth=1", "--set", "encoder.heads=2"]) == 0
    state = load_checkpoint(checkpoint_path(run))
    assert state["data_info"]["windows"] == 7 == state["model"]["cls_memory.embeddings"].shape[0]
    capsys.readouterr()
    assert main(["show", str(run), "--out", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out
    assert "attention.png" in printed and "loss.png" in printed
    _assert_png(tmp_path / "plots" / "attention.png")
