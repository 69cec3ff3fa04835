"""The sove pretext: judges and MIM by hand, memories through the loop and across a resume, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_metrics, kill_after_a_checkpoint

import relpos
from relpos.cli import main
from relpos.config import resolve_config
from relpos.errors import ConfigError, DataError
from relpos.training import build_modality, build_pretext
from relpos_plugins.sove import cross_entropy, judge_probabilities, judges_of_anchors, select_judges

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["encoder.dim=32", "encoder.depth=1", "encoder.heads=2", "train.batch_size=4",
        "pretext.head_hidden_dim=32", "pretext.head_bottleneck_dim=16"]


def images(n=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def build(extra=(), data=None):
    overrides = [*TINY, "modality.image_size=16", "modality.patch_size=4", *extra]
    config = resolve_config(modality="image", pretext="sove", overrides=overrides)
    modality = build_modality(config)
    windows = modality.load(images() if data is None else data)
    return build_pretext(config, modality, windows), windows


# -- judges by hand -----------------------------------------------------------------------------------
# Four unit vectors in 2-D: a = (1, 0), b = (0, 1), c = (0.8, 0.6), d = (0.6, 0.8).
MEMORY = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
ANCHORS = torch.tensor([0, 1])  # a and b


def test_k0_is_a_softmax_over_the_anchors():
    judges = judges_of_anchors(MEMORY, ANCHORS, k=0)
    assert torch.equal(judges.embeddings, MEMORY[:2]) and torch.equal(judges.labels, torch.eye(2))
    p = judge_probabilities(torch.tensor([[1.0, 0.0]]), judges, temperature=1.0)
    # softmax([<u,a>, <u,b>]) = softmax([1, 0])
    torch.testing.assert_close(p, torch.tensor([[math.e / (math.e + 1), 1 / (math.e + 1)]]))


def test_k1_judges_are_the_nearest_neighbours_weighted_by_their_similarity():
    judges = judges_of_anchors(MEMORY, ANCHORS, k=1)
    # a's nearest other embedding is c (cos 0.8 > 0.6 > 0), b's is d (0.8)
    torch.testing.assert_close(judges.embeddings, MEMORY[[0, 2, 1, 3]])
    # rows: a → [1, 0]; c → its similarity 0.8 to its concept, 0.2 to the other; b → [0, 1]; d → [0.2, 0.8]
    expected_labels = torch.tensor([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0], [0.2, 0.8]])
    torch.testing.assert_close(judges.labels, expected_labels)
    assert judges.similarity == pytest.approx(0.8)
    # P(u) = softmax(<u, D>) · Y for u = a, τ = 1: votes ∝ (e^1, e^0.8, e^0, e^0.6)
    votes = torch.tensor([math.e, math.exp(0.8), 1.0, math.exp(0.6)])
    votes = votes / votes.sum()
    expected = torch.stack([votes[0] + 0.8 * votes[1] + 0.2 * votes[3], 0.2 * votes[1] + votes[2] + 0.8 * votes[3]])
    p = judge_probabilities(MEMORY[:1], judges, temperature=1.0)
    torch.testing.assert_close(p[0], expected)
    assert float(p.sum()) == pytest.approx(1.0)


def test_onehot_labels_count_every_judge_fully_for_its_concept():
    judges = judges_of_anchors(MEMORY, ANCHORS, k=1, soft_labels="onehot")
    torch.testing.assert_close(judges.labels, torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))


def test_soft_labels_sum_to_one_and_judges_are_one_batched_topk():
    memory = torch.nn.functional.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    judges = select_judges(memory, n_anchors=12, k=4, generator=torch.Generator().manual_seed(1))
    assert judges.embeddings.shape == (12 * 5, 8) and judges.labels.shape == (60, 12)
    torch.testing.assert_close(judges.labels.sum(1), torch.ones(60))
    # each concept's judges: its anchor first, then the 4 nearest other rows of the bank
    for concept in range(12):
        anchor = judges.embeddings[concept * 5]
        sims = memory @ anchor
        nearest = sims.topk(5).values[1:]  # the anchor itself (cos 1) left out
        torch.testing.assert_close(judges.embeddings[concept * 5 + 1: concept * 5 + 5] @ anchor, nearest)
        torch.testing.assert_close(judges.labels[concept * 5 + 1: concept * 5 + 5, concept], nearest.clamp(0, 1))


def test_anchors_are_distinct_and_drawn_from_the_generator():
    memory = torch.nn.functional.normalize(torch.randn(30, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    a = select_judges(memory, 30, 0, torch.Generator().manual_seed(3))
    b = select_judges(memory, 30, 0, torch.Generator().manual_seed(3))
    assert torch.equal(a.embeddings, b.embeddings)
    assert len({tuple(r.tolist()) for r in a.embeddings}) == 30  # without replacement: every row once


# -- the pretext ----------------------------------------------------------------------------------------
def step(pretext, x, seed=0, progress=0):
    pretext.train()
    pretext.set_progress(progress, 10)
    pretext.zero_grad(set_to_none=True)
    loss, logs = pretext({"x": x}, torch.Generator().manual_seed(seed))
    loss.backward()
    return loss, logs


def test_loss_is_finite_and_gradients_reach_the_student_not_the_teacher():
    pretext, windows = build()
    loss, logs = step(pretext, windows.x[:4])
    assert math.isfinite(loss.item())
    for name, param in pretext.named_parameters():
        if name.startswith(("teacher_encoder.", "teacher_head.")):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name  # mask token included
    assert logs["loss_baseline"] == pytest.approx(2 * math.log(4))  # step 1: 4 CLS and 4 patch concepts


def test_the_loss_is_the_weighted_sum_of_its_two_terms():
    pretext, windows = build()
    loss, logs = step(pretext, windows.x[:4])
    assert loss.item() == pytest.approx(float(logs["loss_cls"] + logs["loss_patch"]), rel=1e-5)
    cls_only, _ = build(["pretext.patch_weight=0"])
    loss, logs = step(cls_only, windows.x[:4])
    assert "loss_patch" not in logs and loss.item() == pytest.approx(float(logs["loss_cls"]), rel=1e-6)
    assert cls_only.mask_token.grad is None  # nothing is masked without L_patch
    patch_only, _ = build(["pretext.cls_weight=0", "pretext.patch_weight=2"])
    loss, logs = step(patch_only, windows.x[:4])
    assert "loss_cls" not in logs and loss.item() == pytest.approx(2 * float(logs["loss_patch"]), rel=1e-6)


def test_patch_loss_counts_masked_tokens_only():
    """Eq. 4 by hand: with the teacher's and student's token distributions fixed, only masked tokens count."""
    teacher = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]])
    student = torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]])
    ce = cross_entropy(teacher, student)  # per token
    torch.testing.assert_close(ce, torch.tensor([[math.log(2), -math.log(0.25), -math.log(0.1)]]))
    mask = torch.tensor([[False, True, False]])
    per_view = (ce * mask).sum(-1) / mask.sum(-1)
    assert float(per_view) == pytest.approx(-math.log(0.25))


def test_memories_fill_after_each_step_and_wrap_around():
    pretext, windows = build(["pretext.cls_memory_size=6", "pretext.n_anchors=4", "pretext.k=2"])
    assert pretext.cls_memory.size == 6
    fills = []
    for s in range(3):
        _, logs = step(pretext, windows.x[:4], seed=s, progress=s)
        fills.append(logs["cls_fill"])  # the memory as the step found it
        assert pretext.cls_memory.n_filled == fills[-1] * 6  # enqueueing waits for after_step
        pretext.after_step(s + 1)
    assert fills == [0.0, pytest.approx(4 / 6), 1.0]
    assert int(pretext.cls_memory.pointer) == (3 * 4) % 6
    norms = pretext.cls_memory.embeddings.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(6))  # L2-normalised teacher embeddings


def test_the_memory_is_larger_than_the_data_is_one_sentence():
    with pytest.raises(DataError, match=r"'pretext.cls_memory_size' is 9, larger than the data can fill \(8 windows"):
        build(["pretext.cls_memory_size=9"])


def test_defaults_are_capped_at_what_the_data_fills():
    pretext, _ = build()
    # 8 windows; a global view of a 16-px image at 4-px patches has 16 tokens
    assert (pretext.cls_memory_size, pretext.patch_memory_size) == (8, 8 * 16)
    assert (pretext.n_anchors, pretext.k, pretext.n_patch_anchors) == (8, 7, 128)


@pytest.mark.parametrize("override, message", [
    (["pretext.cls_memory_size=8", "pretext.k=8"], r"'pretext.k' is 8, but an anchor can select at most 7"),
    (["pretext.cls_memory_size=8", "pretext.n_anchors=9"], r"'pretext.n_anchors' is 9, more anchors than the bank"),
    (["pretext.mask_ratio=[0.2, 1.0]"], r"mask_ratio"),
    (["pretext.cls_memory_size=0"], r"cls_memory_size"),
    (["pretext.patch_memory_size=-4"], r"patch_memory_size"),
    (["pretext.cls_weight=0", "pretext.patch_weight=0"], r"both 0"),
    (["pretext.soft_labels=onehto"], r"soft_labels"),
    # degenerate settings that trained with a loss of 0
    (["pretext.mask_ratio=[0, 0]"], r"^'pretext.mask_ratio' \[0.0, 0.0\] masks no token, so L_patch"),
    (["pretext.patch_memory_size=1"], r"^Invalid value for 'pretext.patch_memory_size': allowed an integer >= 2 .*got 1\.$"),
    (["pretext.cls_memory_size=1"], r"^Invalid value for 'pretext.cls_memory_size': allowed an integer >= 2 .*got 1\.$"),
    (["pretext.n_anchors=1"], r"'pretext.n_anchors'.*>= 2"),
    (["pretext.n_patch_anchors=1"], r"'pretext.n_patch_anchors'.*>= 2"),
    (["pretext.teacher_temp=1e-300"], r"^Invalid value for 'pretext.teacher_temp': allowed a finite number >= 0.001 and <= 10, got 1e-300\.$"),
    (["pretext.student_temp=100"], r"'pretext.student_temp'.*<= 10, got 100"),
    (["pretext.warmup_teacher_temp=0.0001"], r"'pretext.warmup_teacher_temp'.*>= 0.001"),
])
def test_bad_settings_are_one_sentence_before_data_is_read(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(modality="image", pretext="sove", overrides=[*TINY, *override])


def test_a_mask_range_without_a_masked_or_a_visible_token_is_refused():
    # 16-px images, 4-px patches: a global view has 16 tokens; a ratio r masks round(16 r)
    with pytest.raises(ConfigError, match=r"masks up to all 16 tokens of a global view, which leaves the student "
                                          r"nothing visible; keep its high end below 0.969"):
        build(["pretext.mask_ratio=[0.99, 0.99]"])  # round(15.84) = 16
    with pytest.raises(ConfigError, match=r"masks at most round\(0.02 · 16\) = 0 of a global view's 16 tokens"):
        build(["pretext.mask_ratio=[0.01, 0.02]"])  # round(0.32) = 0
    assert build(["pretext.mask_ratio=[0.9, 0.95]"])[0].config.mask_ratio == (0.9, 0.95)  # round(15.2) = 15
    # without L_patch nothing is masked, so any range goes
    assert build(["pretext.mask_ratio=[0, 0]", "pretext.patch_weight=0"])[0].config.patch_weight == 0


@pytest.mark.parametrize("setting", ["pretext.patch_memory_size=1", "pretext.mask_ratio=[0, 0]",
                                     "pretext.teacher_temp=1e-300"])
def test_cli_degenerate_settings_exit_2_before_the_data_is_read(tmp_path, capfd, setting):
    out = tmp_path / "run"
    code = main(["train", "--modality", "image", "--pretext", "sove", "--data", str(tmp_path / "missing.npz"),
                 "--out", str(out), "--set", setting])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and setting.split("=")[0] in lines[0] and "missing" not in lines[0], err
    assert not out.exists()


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capfd):
    out = tmp_path / "run"
    code = main(["train", "--modality", "image", "--pretext", "sove", "--data", str(tmp_path / "missing.npz"),
                 "--out", str(out), "--set", "pretext.k=-1"])
    captured = capfd.readouterr()
    assert code == 2 and "Traceback" not in captured.err and "pretext.k" in captured.err
    assert not out.exists()


def test_an_encoder_without_per_token_outputs_is_refused(monkeypatch):
    from relpos.encoders.vit import PatchEncoder

    monkeypatch.setattr(PatchEncoder, "per_token_outputs", False, raising=False)
    with pytest.raises(ConfigError, match=r"needs an encoder with per-token outputs"):
        build()


# -- CLI training and exact resume -----------------------------------------------------------------------
def cli_args(data, out, steps=6):
    args = ["train", "--modality", "image", "--pretext", "sove", "--data", str(data), "--out", str(out),
            "--steps", str(steps), "--no-progress", "--set", "train.ckpt_every=2", "--set", "train.log_every=1",
            "--set", "modality.image_size=16", "--set", "modality.patch_size=4", "--set", "train.tensorboard=false"]
    for override in TINY:
        args += ["--set", override]
    return args


def test_sigkilled_and_resumed_run_continues_with_the_same_memory(tmp_path):
    data = tmp_path / "images.npz"
    np.savez(data, x=images(n=8))
    steps = 10
    args_a = [*cli_args(data, tmp_path / "A", steps=steps), "--set", "train.ckpt_every=4"]
    args_b = [*cli_args(data, tmp_path / "B", steps=steps), "--set", "train.ckpt_every=4"]
    assert main(args_a) == 0
    step, _ = kill_after_a_checkpoint(args_b, tmp_path / "B", min_step=4)
    killed = torch.load(tmp_path / "B" / "checkpoints" / "last.pt", weights_only=True)
    # by step 4 the bank of 8 has received 16 rows: full, and wrapped around once
    assert int(killed["model"]["cls_memory.count"]) == 8 and step in (4, 8)
    assert main([*args_b, "--resume"]) == 0

    _, rows_a = read_metrics(tmp_path / "A")
    _, rows_b = read_metrics(tmp_path / "B")
    assert [int(r["step"]) for r in rows_b] == list(range(1, steps + 1))
    for key in ("loss", "loss_cls", "loss_patch", "cls_fill", "patch_fill", "judge_similarity", "cls_entropy"):
        assert [r[key] for r in rows_b] == [r[key] for r in rows_a], key
    final_a = torch.load(Path(tmp_path / "A" / "checkpoints" / "last.pt"), weights_only=True)
    final_b = torch.load(Path(tmp_path / "B" / "checkpoints" / "last.pt"), weights_only=True)
    for name in ("cls_memory.embeddings", "cls_memory.pointer", "patch_memory.embeddings", "patch_memory.count"):
        assert name in final_a["model"]
    for name, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][name]), name  # memories bit for bit, and the rest


def test_eeg_trains_from_the_cli(tmp_path, make_recording):
    recording = make_recording(60.0)
    out = tmp_path / "eeg"
    args = ["train", "--modality", "eeg", "--pretext", "sove", "--data", str(recording), "--out", str(out),
            "--steps", "3", "--no-progress", "--set", "modality.window_s=10", "--set", "modality.stride_s=5",
            "--set", "train.tensorboard=false", "--set", "train.log_every=1"]
    for override in TINY:
        args += ["--set", override]
    assert main(args) == 0
    _, rows = read_metrics(out)
    assert len(rows) == 3 and all(math.isfinite(float(r["loss"])) for r in rows)
    assert float(rows[-1]["cls_fill"]) > 0 and float(rows[-1]["loss_patch"]) > 0  # time tokens were masked


RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*_sove.yaml"))


def test_there_are_recipes_for_images_and_eeg():
    assert {"image_sove", "eeg_sleep_sove"} <= {p.stem for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipes_resolve(recipe):
    config = resolve_config(recipe)
    assert config.pretext == "sove" and config.encoder.pos_embed == "sincos"


def test_eval_reads_a_sove_run_student_and_teacher(tmp_path, capfd):
    rng = np.random.default_rng(1)
    data = tmp_path / "labelled.npz"
    np.savez(data, x=images(n=12), y=rng.integers(0, 2, 12))
    out = tmp_path / "run"
    assert main(cli_args(data, out, steps=2)) == 0
    teacher = relpos.load_encoder(out, weights="teacher")
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    torch.testing.assert_close(teacher.encoder.patch_embed.weight, state["teacher_encoder.patch_embed.weight"])
    assert "mask_token" in state and not any(k.startswith("encoder.mask") for k in state)  # not in the encoder
    capfd.readouterr()
    assert main(["eval", str(out), "--protocol", "knn", "--init", "teacher", "--no-progress"]) == 0
    assert (out / "eval" / "knn-teacher-cls.json").is_file()


def test_the_structured_product_equals_the_dense_one():
    memory = torch.nn.functional.normalize(torch.randn(40, 6, generator=torch.Generator().manual_seed(0)), dim=1)
    u = torch.nn.functional.normalize(torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(1)), dim=-1)
    for soft_labels in ("similarity", "onehot"):
        judges = select_judges(memory, 7, 3, torch.Generator().manual_seed(2), soft_labels)
        dense = torch.softmax(u @ judges.embeddings.T / 0.1, dim=-1) @ judges.labels
        torch.testing.assert_close(judge_probabilities(u, judges, 0.1), dense)
    one = select_judges(memory, 1, 3, torch.Generator().manual_seed(2))  # a single concept gets every vote
    torch.testing.assert_close(judge_probabilities(u, one, 0.1), torch.ones(3, 5, 1))


def test_cli_memory_larger_than_the_data_exits_2_and_writes_nothing(tmp_path, capfd):
    data = tmp_path / "images.npz"
    np.savez(data, x=images(n=8))
    out = tmp_path / "run"
    code = main([*cli_args(data, out, steps=2), "--set", "pretext.patch_memory_size=200"])
    err = capfd.readouterr().err
    # 8 windows × 16 tokens per global view (16 px, 4-px patches) = 128 patch embeddings
    assert code == 2 and "Traceback" not in err and "set it to at most 128" in err
    assert not out.exists()
