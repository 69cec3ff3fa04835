"""The dino and pw-self pretexts: losses by hand, schedules through the loop, bad input, exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_metrics

import relpos
from relpos.blocks import teacher_temperature, weight_decay_schedule
from relpos.cli import main
from relpos.config import resolve_config
from relpos.errors import ConfigError, DataError
from relpos.modality import Windows
from relpos.training import build_modality, build_pretext

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "encoder.dim=32", "encoder.depth=1", "encoder.heads=2", "train.batch_size=4",
    "pretext.out_dim=64", "pretext.head_hidden_dim=32", "pretext.head_bottleneck_dim=16",
]


def images(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def build(pretext, extra=(), data=None, modality="image"):
    overrides = [*TINY, "modality.image_size=16", "modality.patch_size=4", *extra] if modality == "image" else [*TINY, *extra]
    config = resolve_config(modality=modality, pretext=pretext, overrides=overrides)
    mod = build_modality(config)
    windows = mod.load(images() if data is None else data)
    return build_pretext(config, mod, windows), windows


def step_loss(pretext, x, seed=0):
    pretext.train()
    pretext.zero_grad(set_to_none=True)
    loss, logs = pretext({"x": x}, torch.Generator().manual_seed(seed))
    loss.backward()
    return loss, logs


# -- losses by hand ---------------------------------------------------------------------------------
def test_dino_loss_is_the_mean_over_pairs_of_different_views():
    pretext, _ = build("dino", ["pretext.n_local=1", "pretext.out_dim=2"])
    # teacher outputs (1 sample, 2 global views, K = 2), centre 0; teacher view 0 uniform, view 1 certain
    teacher = torch.tensor([[[0.0, 0.0], [10.0, 0.0]]])
    # student views 0, 1 (global) and 2 (local) with P_s = (1/4, 3/4), (1/2, 1/2), (3/4, 1/4) at τ_s = 0.1
    ln3 = math.log(3) * 0.1
    student = torch.tensor([[[0.0, ln3], [0.0, 0.0], [ln3, 0.0]]])
    temp = 0.04  # teacher view 1 → P_t ≈ (1, 0) since 10 / 0.04 = 250
    h = {  # H(P_t^i, P_s^j) for the pairs with i ≠ j
        (0, 1): math.log(2),
        (0, 2): -(0.5 * math.log(0.75) + 0.5 * math.log(0.25)),
        (1, 0): -math.log(0.25),
        (1, 2): -math.log(0.75),
    }
    expected = sum(h.values()) / 4
    assert pretext.cls_loss(teacher, student, temp).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "loss, cls_weight, expected",
    [
        ("mean", 0.2, [7 / 3, 1.0]),  # (H_cls + Σ H_patch) / (1 + P): (1 + 6) / 3; no match: 1 / 1
        ("sum", 0.2, [7.0, 1.0]),  # H_cls + Σ H_patch
        ("lambda", 0.2, [0.2 * 1 + 0.8 * 3, 1.0]),  # λ H_cls + (1 − λ) mean H_patch; no match: H_cls
        ("lambda", 0.5, [0.5 + 1.5, 1.0]),
    ],
)
def test_pw_self_losses_by_hand(loss, cls_weight, expected):
    pretext, _ = build("pw-self", [f"pretext.loss={loss}", f"pretext.cls_weight={cls_weight}"])
    cls_ce = torch.tensor([1.0, 1.0])
    patch_sum = torch.tensor([6.0, 0.0])
    count = torch.tensor([2.0, 0.0])
    assert pretext.combine(cls_ce, patch_sum, count).tolist() == pytest.approx(expected)


def test_pw_self_with_lambda_1_is_dino():
    # λ = 1 keeps only the CLS terms: the same loss as DINO from the same weights and random streams
    extra = ["pretext.patch_augment=false"]
    dino, windows = build("dino")
    pw, _ = build("pw-self", ["pretext.loss=lambda", "pretext.cls_weight=1", *extra])
    pw.load_state_dict(dino.state_dict())
    x = windows.x[:4]
    a, _ = step_loss(dino, x, seed=5)
    b, logs = step_loss(pw, x, seed=5)
    assert b.item() == pytest.approx(a.item(), rel=1e-5)
    assert logs["matched"] > 0  # the views did overlap: the patch terms were there, with weight 0


def test_pw_self_patch_terms_change_the_loss_and_train_every_token():
    pretext, windows = build("pw-self")
    loss, logs = step_loss(pretext, windows.x[:4])
    assert math.isfinite(loss.item()) and logs["matched"] > 0
    assert loss.item() != pytest.approx(logs["cls_ce"])  # Eq. 8 averages CLS with the patch terms


# -- teacher, schedules ---------------------------------------------------------------------------------
def test_teacher_gets_no_gradient_and_follows_the_student():
    pretext, windows = build("dino")
    step_loss(pretext, windows.x[:4])
    teacher_params = list(pretext.teacher_encoder.parameters()) + list(pretext.teacher_head.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher_params)
    before = pretext.teacher_encoder.patch_embed.weight.clone()
    with torch.no_grad():
        pretext.encoder.patch_embed.weight.add_(1.0)
    pretext.set_progress(0, 10)
    pretext.after_step(1)  # momentum 0.996 at step 0: the teacher moves 0.004 of the way
    moved = pretext.teacher_encoder.patch_embed.weight - before
    torch.testing.assert_close(moved, torch.full_like(moved, 0.004), atol=1e-6, rtol=0)


def test_centre_is_updated_after_the_step_not_during_forward():
    pretext, windows = build("dino")
    step_loss(pretext, windows.x[:4])
    assert torch.all(pretext.centering.center == 0)  # forward alone leaves the centre alone
    pending = pretext._pending_center.reshape(-1, pretext.config.out_dim).mean(0)
    pretext.after_step(1)
    torch.testing.assert_close(pretext.centering.center[0], 0.1 * pending)
    assert "centering.center" in pretext.state_dict()


def test_schedules_come_from_the_loop_progress():
    pretext, windows = build("dino", ["pretext.teacher_temp_warmup=0.5"])
    pretext.set_progress(5, 20)  # warm-up over 10 steps: half-way
    _, logs = step_loss(pretext, windows.x[:4])
    assert logs["teacher_temp"] == pytest.approx(teacher_temperature(5, 20, 0.04, 0.07, 0.5)) == pytest.approx(0.055)
    assert pretext.weight_decay_at(10, 20) == pytest.approx(weight_decay_schedule(10, 20)) == pytest.approx(0.22)


def test_pw_self_warms_the_teacher_temperature_up_over_the_papers_15_percent():
    # PW-Self: 0.04 → 0.07 over 30 of 200 epochs. On a 200-step run: 0.055 at step 15, 0.07 from 30.
    pw_self, _ = build("pw-self")
    assert pw_self.config.teacher_temp_warmup == 0.15
    for step, expected in ((0, 0.04), (15, 0.055), (30, 0.07), (100, 0.07)):
        pw_self.set_progress(step, 200)
        assert pw_self.teacher_temp_now() == pytest.approx(expected)
    # DINO keeps its 30 % (30 of 100 epochs): at step 15 of 200 a quarter of the way, 0.0475
    dino, _ = build("dino")
    dino.set_progress(15, 200)
    assert dino.teacher_temp_now() == pytest.approx(0.0475)


def test_last_layer_frozen_for_the_first_steps():
    pretext, windows = build("dino", ["pretext.freeze_last_layer=2", "pretext.norm_last_layer=false"])
    pretext.set_progress(1, 10)
    step_loss(pretext, windows.x[:4])
    assert all(p.grad is None for p in pretext.head.last_layer.parameters())
    pretext.set_progress(2, 10)
    step_loss(pretext, windows.x[:4])
    assert all(p.grad is not None for p in pretext.head.last_layer.parameters())


# -- bad input ---------------------------------------------------------------------------------------------
def test_one_window_is_refused():
    with pytest.raises(DataError, match="at least 2 windows.*holds 1"):
        build("dino", data=images(n=1))


@pytest.mark.parametrize(
    "override, message",
    [
        ("pretext.global_scale=[0.5, 1.2]", r"'pretext.global_scale'.*<= 1, got \[0.5, 1.2\]"),
        ("pretext.local_scale=[0.3, 0.1]", r"'pretext.local_scale'.*low <= high, got \[0.3, 0.1\]"),
        ("pretext.local_scale=[0, 0.1]", r"'pretext.local_scale'.*> 0 and <= 1, got \[0.0, 0.1\]"),
        ("pretext.teacher_momentum=1.5", r"'pretext.teacher_momentum'.*>= 0 and <= 1, got 1.5"),
        ("pretext.teacher_momentum=-0.1", r"'pretext.teacher_momentum'.*>= 0 and <= 1, got -0.1"),
        ("pretext.local_resolution=2", r"holds no whole patch"),
        ("pretext.local_resolution=32", r"must not be larger than global"),
        ("pretext.local_scale=[0.5, 1.0]", r"must not be larger than global"),
    ],
)
def test_bad_view_settings_are_one_sentence(override, message):
    with pytest.raises(ConfigError, match=message):
        build("pw-self", [override])


@pytest.mark.parametrize("pretext_name", ["dino", "pw-self"])
@pytest.mark.parametrize(
    "setting, message",
    [
        # one output: every probability is 1 and the loss 0, so nothing trains
        ("pretext.out_dim=1", "Invalid value for 'pretext.out_dim': allowed an integer >= 2 and <= 1048576, got 1."),
        # NaN at step 1 before the range existed
        ("pretext.teacher_temp=1e-300",
         "Invalid value for 'pretext.teacher_temp': allowed a finite number >= 0.001 and <= 10, got 1e-300."),
        ("pretext.warmup_teacher_temp=0.0005", "'pretext.warmup_teacher_temp': allowed a finite number >= 0.001"),
        ("pretext.student_temp=11", "'pretext.student_temp': allowed a finite number >= 0.001 and <= 10, got 11.0."),
    ],
)
def test_degenerate_settings_exit_2_before_the_data_is_read(tmp_path, capfd, pretext_name, setting, message):
    out = tmp_path / "run"
    code = main(["train", "--modality", "image", "--pretext", pretext_name, "--data", str(tmp_path / "missing.npz"),
                 "--out", str(out), "--set", setting])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_the_smallest_head_and_temperatures_still_train():
    pretext, windows = build("dino", ["pretext.out_dim=2", "pretext.teacher_temp=0.001",
                                      "pretext.warmup_teacher_temp=0.001", "pretext.student_temp=0.001"])
    loss, _ = step_loss(pretext, windows.x[:4])
    assert math.isfinite(loss.item()) and loss.item() > 0


def test_pw_self_needs_an_encoder_with_per_token_outputs(monkeypatch):
    from relpos.encoders.vit import PatchEncoder

    monkeypatch.setattr(PatchEncoder, "per_token_outputs", False, raising=False)
    with pytest.raises(ConfigError, match="needs an encoder with per-token outputs"):
        build("pw-self")
    build("dino")  # DINO reads CLS only


def test_flipping_a_modality_without_flips_is_refused():
    x = np.random.default_rng(0).standard_normal((2, 3, 400)).astype(np.float32)
    series = ["modality.sfreq=100", "modality.window_s=2", "modality.stride_s=1", "modality.patch_s=0.5"]
    with pytest.raises(ConfigError, match="allows no flips"):
        build("dino", [*series, "pretext.flip=true"], data=x, modality="timeseries")
    pretext, windows = build("dino", series, data=x, modality="timeseries")  # unset: no flips
    assert pretext.flippable == (False,)


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capfd):
    data = tmp_path / "images.npz"
    np.savez(data, x=images())
    out = tmp_path / "run"
    code = main(["train", "--modality", "image", "--pretext", "pw-self", "--data", str(data), "--out", str(out),
                 "--set", "pretext.teacher_momentum=2", "--steps", "2", "--no-progress"])
    err = capfd.readouterr().err
    assert code == 2
    assert "teacher_momentum" in err and "Traceback" not in err
    assert not out.exists()


# -- CLI training and exact resume ---------------------------------------------------------------------
def cli_args(pretext, data, out, steps=6):
    args = ["train", "--modality", "image", "--pretext", pretext, "--data", str(data), "--out", str(out),
            "--steps", str(steps), "--no-progress", "--set", "train.ckpt_every=2", "--set", "train.log_every=1",
            "--set", "modality.image_size=16", "--set", "modality.patch_size=4", "--set", "train.tensorboard=false"]
    for override in TINY:
        args += ["--set", override]
    return args


class Killed(Exception):
    pass


@pytest.mark.parametrize("pretext_name", ["dino", "pw-self"])
def test_killed_and_resumed_run_reproduces_the_uninterrupted_one(pretext_name, tmp_path, monkeypatch):
    data = tmp_path / "images.npz"
    np.savez(data, x=images(n=8))
    assert main(cli_args(pretext_name, data, tmp_path / "A")) == 0

    cls = relpos.get_pretext(pretext_name)
    original = cls.forward
    calls = []

    def dies_at_step_5(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # after the checkpoint of step 4 and the logged row of step 4
            raise Killed()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", dies_at_step_5)
    with pytest.raises(Killed):
        main(cli_args(pretext_name, data, tmp_path / "B"))
    monkeypatch.setattr(cls, "forward", original)
    assert main([*cli_args(pretext_name, data, tmp_path / "B"), "--resume"]) == 0

    header_a, rows_a = read_metrics(tmp_path / "A")
    header_b, rows_b = read_metrics(tmp_path / "B")
    assert header_a == header_b and [int(r["step"]) for r in rows_b] == list(range(1, 7))
    for key in ("loss", "teacher_temp", "momentum"):
        assert [r[key] for r in rows_b] == [r[key] for r in rows_a], key
    final_a = torch.load(Path(tmp_path / "A" / "checkpoints" / "last.pt"), weights_only=True)
    final_b = torch.load(Path(tmp_path / "B" / "checkpoints" / "last.pt"), weights_only=True)
    for name, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][name]), name  # student, teacher and centre alike


def test_eeg_trains_from_the_cli(tmp_path, make_recording):
    recording = make_recording(40.0)
    out = tmp_path / "eeg"
    args = ["train", "--modality", "eeg", "--pretext", "pw-self", "--data", str(recording), "--out", str(out),
            "--steps", "2", "--no-progress", "--set", "modality.window_s=10", "--set", "modality.stride_s=5",
            "--set", "train.tensorboard=false", "--set", "train.log_every=1"]
    for override in TINY:
        args += ["--set", override]
    assert main(args) == 0
    _, rows = read_metrics(out)
    assert len(rows) == 2 and float(rows[-1]["matched"]) > 0
    encoder = relpos.load_encoder(out)
    assert encoder.encoder.config.pos_embed == "sincos"  # the pretext's default, kept for evaluation
    assert isinstance(encoder.open(str(recording)), Windows)


def test_eval_offers_the_teacher_as_well_as_the_student(tmp_path, capfd):
    rng = np.random.default_rng(1)
    data = tmp_path / "labelled.npz"
    np.savez(data, x=images(n=12), y=rng.integers(0, 2, 12))
    out = tmp_path / "run"
    assert main(cli_args("dino", data, out, steps=2)) == 0
    student = relpos.load_encoder(out)
    teacher = relpos.load_encoder(out, weights="teacher")
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    torch.testing.assert_close(teacher.encoder.patch_embed.weight, state["teacher_encoder.patch_embed.weight"])
    assert not torch.equal(teacher.encoder.patch_embed.weight, student.encoder.patch_embed.weight)
    capfd.readouterr()
    assert main(["eval", str(out), "--protocol", "knn", "--init", "teacher", "--no-progress"]) == 0
    assert "EMA teacher" in capfd.readouterr().out
    assert (out / "eval" / "knn-teacher-cls.json").is_file()


def test_teacher_of_a_run_without_one_is_one_sentence(tmp_path):
    data = tmp_path / "images.npz"
    np.savez(data, x=images())
    out = tmp_path / "part"
    assert main(["train", "--modality", "image", "--pretext", "part", "--data", str(data), "--out", str(out),
                 "--steps", "1", "--no-progress", "--set", "modality.image_size=16", "--set", "modality.patch_size=4",
                 "--set", "encoder.dim=32", "--set", "encoder.depth=1", "--set", "encoder.heads=2",
                 "--set", "pretext.n_pairs=8", "--set", "train.tensorboard=false"]) == 0
    with pytest.raises(relpos.RelposError, match="has no EMA teacher"):
        relpos.load_encoder(out, weights="teacher")


RECIPES = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")
                 if p.stem.endswith(("_dino", "_pw_self")))


def test_there_are_recipes_for_images_and_eeg():
    names = {p.stem for p in RECIPES}
    assert {"image_dino", "image_pw_self", "eeg_sleep_dino", "eeg_sleep_pw_self"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipes_resolve_with_positions(recipe):
    config = resolve_config(recipe)
    assert config.pretext in ("dino", "pw-self")
    assert config.encoder.pos_embed == "sincos"
    assert config.pretext_config.head_bn  # the small-scale recipes need it (bench/README.md)


def test_out_of_memory_on_the_first_step_says_what_to_lower(tmp_path, monkeypatch, capfd):
    data = tmp_path / "images.npz"
    np.savez(data, x=images())
    cls = relpos.get_pretext("pw-self")

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cls, "forward", out_of_memory)
    out = tmp_path / "run"
    code = main(cli_args("pw-self", data, out, steps=2))
    err = capfd.readouterr().err
    assert code == 2 and "Traceback" not in err
    # 16-px images, 4-px patches: global views 4x4 = 16 tokens + CLS; local views 96/224 · 16 ≈ 8 px → 2x2 + CLS;
    # 2 · 17 + 2 · 5 = 44 tokens per sample, 4 samples → 176
    assert "each sample makes up to 44 tokens" in err and "the batch makes 176" in err
    assert "train.batch_size (now 4) to 2" in err and "pretext.n_local (now 2, 23 % of the tokens)" in err
    assert "pretext.out_dim=64" in err
    assert not (out / "checkpoints").exists()


def test_head_batch_norm_keeps_teacher_outputs_apart():
    # Without batch norm a tiny untrained encoder gives almost the same CLS output for every image, so the
    # centred teacher is nearly uniform (the collapse bench/README.md reports); batch norm in the head
    # spreads the outputs over the batch from the first step.
    spread = {}
    for head_bn in ("false", "true"):
        pretext, windows = build("dino", [f"pretext.head_bn={head_bn}"])
        step_loss(pretext, windows.x[:6])
        spread[head_bn] = pretext._pending_center[:, 0].std(0).mean().item()
    assert spread["true"] > 5 * spread["false"]


def test_python_api_trains_pw_self_on_a_time_series_and_embeds_with_the_teacher(tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 2, 600)).astype(np.float32)
    config = resolve_config(
        modality="timeseries", pretext="pw-self",
        overrides=[*TINY, "modality.sfreq=100", "modality.window_s=2", "modality.stride_s=1", "modality.patch_s=0.25",
                   "train.steps=2", "train.progress=false", "train.tensorboard=false", f"out={tmp_path / 'ts'}"],
    )
    result = relpos.train(config, data=x)
    assert math.isfinite(result.loss)
    teacher = relpos.load_encoder(result.run_dir, weights="teacher")
    windows = result.pretext.modality.load(x)
    features = teacher.embed(windows.x)
    assert features.shape == (len(windows), 32) and torch.isfinite(features).all()


class _VolumeConfig:
    patch_size = 4


class _Volume(relpos.Modality):
    """A 3-axis modality as a third party would write it (no flips, no photometric hook)."""

    name = "volume-test"
    axes = ("depth", "row", "col")
    Config = _VolumeConfig


@pytest.mark.parametrize("pretext_name", ["dino", "pw-self"])
def test_three_axis_data_trains_through_the_same_code(pretext_name):
    cls = relpos.get_pretext(pretext_name)
    config = cls.Config(out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16)
    windows = Windows(x=torch.randn(4, 1, 12, 12, 12))
    pretext = cls(config, _Volume(), relpos.EncoderConfig(dim=32, depth=1, heads=2, pos_embed="sincos"), windows)
    loss, logs = step_loss(pretext, windows.x)
    assert math.isfinite(loss.item())
    assert pretext.encoder.patch_embed.weight.grad is not None
    if pretext_name == "pw-self":
        assert logs["matched"] > 0  # matched cubes between 3-D views
