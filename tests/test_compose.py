"""Composed pretexts (``--pretext part+sove``): one run, one shared encoder, several objectives.

The data is 12 synthetic 2-channel time series of 64 samples (patches of 8), the models tiny, so
every run takes a second or two; the SIGKILL test trains in a real process as tests/test_resume.py
does, and the two-process test forks as torchrun starts processes (tests/test_distributed.py).
"""

from __future__ import annotations

import csv
import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import kill_after_a_checkpoint

import relpos
from relpos.checkpoint import load_checkpoint
from relpos.cli import main
from relpos.encoders import build_encoder
from relpos.errors import ConfigError
from relpos.pretext import construct_pretext
from relpos.show import show

TINY = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "modality.patch_samples=8",
        "train.batch_size=4", "train.log_every=1", "train.device=cpu", "train.progress=false",
        "train.tensorboard=false", "pretext.part.n_pairs=16"]
SOVE_TINY = ["pretext.sove.head_hidden_dim=32", "pretext.sove.head_bottleneck_dim=16"]


def tiny_windows() -> relpos.Windows:
    x = torch.from_numpy(np.random.default_rng(7).normal(size=(12, 2, 64)).astype(np.float32))
    return relpos.Windows(x=x, groups=np.array([f"rec{i // 4}" for i in range(12)]))


def composed_config(out: Path, pretext: str = "part+sove", steps: int = 4, extra=()) -> relpos.RunConfig:
    overrides = [*TINY, f"train.steps={steps}", "train.ckpt_every=2", *(SOVE_TINY if "sove" in pretext else ()), *extra]
    config = relpos.resolve_config(modality="timeseries", pretext=pretext, overrides=overrides)
    config.out = str(out)
    return config


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def part_sove(tmp_path_factory):
    out = tmp_path_factory.mktemp("compose") / "run"
    result = relpos.train(composed_config(out, extra=["pretext.weights.part=2", "pretext.weights.sove=0.5"]),
                          data=tiny_windows())
    return out, result


# -- the configuration ------------------------------------------------------------------------------------
def test_a_plus_joined_name_keeps_each_pretexts_settings_under_its_name():
    config = relpos.resolve_config(modality="timeseries", pretext="part+sove",
                                   overrides=["pretext.sove.n_local=4", "pretext.weights.part=2"])
    section = config.to_dict()["pretext"]
    assert section["name"] == "part+sove"
    assert section["weights"] == {"part": 2.0, "sove": 1.0}  # an unnamed weight is 1
    assert section["sove"]["n_local"] == 4 and section["part"]["n_pairs"] == 2048  # PART's default
    # SOVE trains with sin-cos positions, so the shared encoder has them (PART's forward drops them).
    assert config.encoder.pos_embed == "sincos"
    # The resolved config is its own input: a checkpoint's config resolves to the same run.
    assert relpos.resolve_config(config.to_dict()).to_dict() == config.to_dict()


def test_the_yaml_list_form_is_the_same_run_as_the_mapping_form(tmp_path):
    listed = tmp_path / "listed.yaml"
    listed.write_text("modality: timeseries\npretext:\n  - {name: part, weight: 2, n_pairs: 64}\n  - name: sove\n    n_local: 4\n")
    mapped = tmp_path / "mapped.yaml"
    mapped.write_text("modality: timeseries\npretext:\n  name: part+sove\n  weights: {part: 2}\n"
                      "  part: {n_pairs: 64}\n  sove: {n_local: 4}\n")
    assert relpos.resolve_config(listed).to_dict() == relpos.resolve_config(mapped).to_dict()


def test_print_config_shows_the_composed_config(capsys):
    assert main(["train", "--modality", "timeseries", "--pretext", "part+sove", "--set", "pretext.sove.n_local=3",
                 "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "name: part+sove" in text and "  sove:\n" in text and "    n_local: 3\n" in text and "  weights:\n" in text


@pytest.mark.parametrize("pretext, overrides, expected", [
    ("part+part", [], "'part' is named twice"),
    ("part+", [], "with no empty name between them"),
    ("part+sovee", [], "'sove'"),  # the did-you-mean of an unknown name
    ("part+sove", ["pretext.weights.part=0"], "'pretext.weights.part': the loss weight of pretext 'part' must be a finite number above 0, got 0"),
    ("part+sove", ["pretext.weights.sove=-1"], "above 0, got -1"),
    ("part+sove", ["pretext.weights.sove=heavy"], "above 0, got 'heavy'"),
    ("part+sove", ["pretext.weights.dino=1"], "Unknown pretext 'dino' in 'pretext.weights'"),
    ("part+sove", ["pretext.n_pairs=4"], "Unknown config key 'pretext.n_pairs'"),
    ("part+sove", ["pretext.sove.n_pairs=4"], "Unknown config key 'pretext.sove.n_pairs'"),
    ("part+sove", ["pretext.part.n_pairs=0"], "'pretext.part.n_pairs'"),
    ("part+sove", ["pretext.scale=loud"], "Invalid value for 'pretext.scale': allowed 'none' or 'baseline', got 'loud'"),
])
def test_a_bad_composition_is_one_sentence_with_exit_status_2(pretext, overrides, expected, capsys, tmp_path):
    argv = ["train", "--modality", "timeseries", "--pretext", pretext, "--out", str(tmp_path / "run")]
    for override in overrides:
        argv += ["--set", override]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_pretext_listed_twice_in_the_yaml_list_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("pretext: [{name: part}, {name: part, weight: 2}]\n")
    with pytest.raises(ConfigError, match="'part' is listed twice"):
        relpos.resolve_config(path)


def test_a_components_own_check_names_its_setting_in_the_composed_section():
    # PART refuses an aspect range on one axis; composed, the key it names is where the setting lives.
    with pytest.raises(ConfigError, match=r"'pretext\.part\.aspect_range' needs at least 2 axes"):
        relpos.resolve_config(modality="timeseries", pretext="part+sove", overrides=["pretext.part.aspect_range=[0.5, 2]"])


def test_positions_off_for_every_pretext_that_needs_them_is_refused():
    with pytest.raises(ConfigError, match="'mae'"):
        relpos.resolve_config(modality="timeseries", pretext="part+mae", overrides=["encoder.pos_embed=none"])


# -- the shared encoder and its positions ---------------------------------------------------------------
def test_without_positions_the_encoder_ignores_the_centres():
    torch.manual_seed(0)
    config = relpos.resolve_config(modality="timeseries", pretext="sove", overrides=["encoder.dim=16", "encoder.depth=1",
                                                                                    "encoder.heads=2"])
    encoder = build_encoder(config.encoder, 2, (8,)).eval()
    patches = torch.randn(1, 3, 2, 8)
    near, far = torch.tensor([[[4.0], [12.0], [20.0]]]), torch.tensor([[[40.0], [4.0], [30.0]]])
    assert not torch.allclose(encoder(patches, near), encoder(patches, far))  # positions matter
    with encoder.without_positions():
        assert torch.equal(encoder(patches, near), encoder(patches, far))
        assert torch.equal(encoder(patches, near), encoder(patches, None))
    assert not encoder.positions_dropped  # and they are back afterwards


def test_part_runs_without_positions_and_sove_with_them(part_sove):
    _, result = part_sove
    composed = result.pretext
    assert composed.position_free == ("part",)
    assert composed.parts["part"].encoder is composed.encoder is composed.parts["sove"].encoder  # one encoder
    seen = {}
    for name in ("part", "sove"):
        part = composed.parts[name]
        original = part.forward

        def spy(batch, generator, _name=name, _original=original):
            seen[_name] = composed.encoder.positions_dropped
            return _original(batch, generator)

        part.forward = spy
    composed.train()
    composed({"x": tiny_windows().x[:4]}, torch.Generator().manual_seed(0))
    assert seen == {"part": True, "sove": False}


# -- the loop: logs, checkpoints, resume ------------------------------------------------------------------
def test_the_loss_is_the_weighted_sum_and_each_pretext_is_logged(part_sove):
    out, _ = part_sove
    logged = rows(out)
    assert len(logged) == 4
    for row in logged:  # weights part 2, sove 0.5
        assert float(row["loss"]) == pytest.approx(2 * float(row["part/loss"]) + 0.5 * float(row["sove/loss"]), rel=1e-5)
    assert {"part/loss_baseline", "part/center_l2", "sove/loss_baseline", "sove/teacher_temp"} <= set(logged[0])


def test_scale_baseline_weighs_each_loss_over_its_trivial_baseline(tmp_path):
    out = tmp_path / "scaled"
    relpos.train(composed_config(out, steps=3, extra=["pretext.scale=baseline", "pretext.weights.part=2"]),
                 data=tiny_windows())
    logged = rows(out)
    assert len(logged) == 3
    for row in logged:  # 2 · part/loss / part/loss_baseline + 1 · sove/loss / sove/loss_baseline
        expected = (2 * float(row["part/loss"]) / float(row["part/loss_baseline"])
                    + float(row["sove/loss"]) / float(row["sove/loss_baseline"]))
        assert float(row["loss"]) == pytest.approx(expected, rel=1e-5)
    assert relpos.load_encoder(out).config.to_dict()["pretext"]["scale"] == "baseline"


def test_scale_baseline_with_a_pretext_that_reports_no_baseline_is_one_sentence(monkeypatch):
    from relpos.trivial_baseline import BASELINE_KEY

    sove = relpos.plugins.get_pretext("sove")
    monkeypatch.setattr(sove, "log_keys", tuple(k for k in sove.log_keys if k != BASELINE_KEY))
    config = relpos.resolve_config(modality="timeseries", pretext="part+sove",
                                   overrides=[*TINY, *SOVE_TINY, "pretext.scale=baseline"])
    with pytest.raises(ConfigError, match=r"^'pretext.scale: baseline' divides each pretext's loss by its trivial "
                                          r"baseline, and 'sove' reports none"):
        construct_pretext(relpos.get_pretext("part+sove"), config.pretext_config, relpos.get_modality("timeseries")(
            config.modality_config), config.encoder, tiny_windows())


def test_the_checkpoint_holds_each_tensor_once_and_the_teacher_where_runs_keep_it(part_sove):
    out, result = part_sove
    model = load_checkpoint(out)["model"]
    assert not [k for k in model if ".encoder." in k and k.startswith("parts.")]  # the shared encoder once
    assert any(k.startswith("encoder.") for k in model) and any(k.startswith("teacher_encoder.") for k in model)
    assert not [k for k in model if k.startswith("parts.sove.teacher_encoder.")]  # SOVE's teacher is the run's
    unique = {id(t) for t in result.pretext.state_dict(keep_vars=True).values()}
    assert len(model) == len(unique)
    # load_encoder and the teacher read them as for any run
    student = relpos.load_encoder(out)
    torch.testing.assert_close(student.encoder.state_dict()["cls_token"], model["encoder.cls_token"])
    teacher = relpos.load_encoder(out, weights="teacher")
    torch.testing.assert_close(teacher.encoder.state_dict()["cls_token"], model["teacher_encoder.cls_token"])


def test_a_composed_checkpoint_loads_back_into_a_fresh_composition(part_sove):
    out, result = part_sove
    state = load_checkpoint(out)
    config = relpos.resolve_config(state["config"])
    torch.manual_seed(123)  # other initial weights, replaced by the checkpoint's
    fresh = construct_pretext(type(result.pretext), config.pretext_config, result.pretext.modality,
                                     config.encoder, tiny_windows())
    fresh.load_state_dict(state["model"])
    for name, tensor in result.pretext.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    assert fresh.parts["sove"].teacher_encoder.cls_token.data_ptr() != fresh.encoder.cls_token.data_ptr()


def test_export_writes_the_shared_encoder_and_the_teacher(part_sove, tmp_path):
    out, _ = part_sove
    assert main(["export", str(out), "--out", str(tmp_path / "student.safetensors")]) == 0
    assert main(["export", str(out), "--teacher", "--out", str(tmp_path / "teacher.safetensors")]) == 0
    from safetensors.torch import load_file

    model = load_checkpoint(out)["model"]
    assert torch.equal(load_file(tmp_path / "student.safetensors")["cls_token"], model["encoder.cls_token"])
    assert torch.equal(load_file(tmp_path / "teacher.safetensors")["cls_token"], model["teacher_encoder.cls_token"])


def test_the_weight_decay_is_the_largest_any_pretext_asks_for(part_sove):
    _, result = part_sove
    sove = result.pretext.parts["sove"]
    for step in (0, 2, 4):
        assert result.pretext.weight_decay_at(step, 4) == sove.weight_decay_at(step, 4)  # PART asks for none


def test_out_of_memory_advice_names_each_pretexts_settings_where_they_live(part_sove):
    _, result = part_sove
    hint = result.pretext.memory_hint(4)
    assert hint.startswith("sove: each sample makes up to")  # PART gives no advice of its own
    assert "pretext.sove.n_local (now 2" in hint and "pretext.n_local" not in hint


def test_a_killed_composed_run_resumes_bit_for_bit(tmp_path):
    steps = 8

    def argv(out: Path) -> list[str]:
        settings = [s for s in TINY if not s.startswith("modality.")] + [*SOVE_TINY, "train.ckpt_every=2",
                                                                          "encoder.dim=32"]
        return ["train", "--pretext", "part+sove", "--out", str(out), "--steps", str(steps),
                *[a for s in settings for a in ("--set", s)]]

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(argv(whole)) == 0
    step, _ = kill_after_a_checkpoint(argv(cut), cut, min_step=2, before_step=steps)
    assert main([*argv(cut), "--resume"]) == 0
    first, second = rows(whole), rows(cut)
    assert [int(r["step"]) for r in second] == list(range(1, steps + 1)) and step % 2 == 0
    for key in ("loss", "part/loss", "sove/loss", "sove/loss_baseline", "sove/momentum"):
        assert [r[key] for r in second] == [r[key] for r in first], key
    final_whole, final_cut = load_checkpoint(whole), load_checkpoint(cut)
    assert final_whole["model"].keys() == final_cut["model"].keys()
    for name, tensor in final_whole["model"].items():
        assert torch.equal(tensor, final_cut["model"][name]), name
    assert final_cut["baseline_watches"].keys() == {"part", "sove"}


# -- composition with a third-party pretext, batches and the baseline watch --------------------------------
def test_the_example_plugin_jigsaw_composes_with_part_and_show_draws_parts_figures(tmp_path):
    from example_plugins import registered

    data = tmp_path / "windows.npy"
    np.save(data, tiny_windows().x.numpy())
    with registered("relpos-jigsaw"):
        out = tmp_path / "run"
        config = composed_config(out, "jigsaw+part", steps=2, extra=["modality.sfreq=100"])
        config.data = str(data)
        assert config.encoder.pos_embed == "none"  # neither trains with positions
        result = relpos.train(config)
        assert set(result.pretext.parts) == {"jigsaw", "part"}
        assert {"jigsaw/loss", "jigsaw/accuracy", "part/loss"} <= set(rows(out)[0])
        assert type(result.pretext).figures == ("part.reconstruction", "part.uncertainty", "part.symmetry")
        shown = show(out, what="part.reconstruction", data=data)
        assert [p.name for p in shown.paths] == ["part.reconstruction.png"]
        assert shown.numbers["part.reconstruction"]


@pytest.mark.parametrize("name, settings, refused", [
    ("rp+ts", [], "'rp' and 'ts'"),
    ("part+cpc", ["pretext.part.scope=recording"], "'part' and 'cpc'"),
    ("part+cpc", [], None),  # PART within a window asks for nothing
])
def test_two_pretexts_with_window_requests_are_refused_before_the_data_is_read(tmp_path, capsys, monkeypatch, name,
                                                                                  settings, refused):
    from relpos_modalities.eeg.modality import EEGModality

    small = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", *settings]
    if refused is None:
        assert relpos.resolve_config(modality="eeg", pretext=name, overrides=small).pretext == name
        return
    sentence = rf"Pretexts {refused} each ask for their own samples .* compose at most one"
    with pytest.raises(ConfigError, match=sentence):
        relpos.resolve_config(modality="eeg", pretext=name, overrides=small)
    read = []
    monkeypatch.setattr(EEGModality, "load", lambda self, source: read.append(source))
    argv = ["train", "--pretext", name, "--out", str(tmp_path / "run")] + [a for s in small for a in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(sentence, err) and read == [] and not (tmp_path / "run").exists()


def test_a_plugin_that_sets_two_window_requests_unannounced_is_still_refused_when_built(monkeypatch):
    from relpos_plugins.rp import RecordingPretext

    monkeypatch.setattr(RecordingPretext, "requests_windows", classmethod(lambda cls, config: False))
    config = relpos.resolve_config(modality="eeg", pretext="rp+ts", overrides=["encoder.dim=16", "encoder.depth=1",
                                                                                  "encoder.heads=2"])
    onsets = np.arange(40, dtype=float) * 30.0
    windows = relpos.Windows(x=torch.zeros(40, 2, 3000), groups=np.array(["r"] * 40), onsets=onsets,
                             durations=np.full(40, 30.0), info={"sfreq": 100.0})
    modality = relpos.get_modality("eeg")(config.modality_config)
    with pytest.raises(ConfigError, match=r"Pretexts 'rp' and 'ts' each ask for their own samples .* compose at most one"):
        construct_pretext(relpos.get_pretext("rp+ts"), config.pretext_config, modality, config.encoder, windows)


@dataclasses.dataclass
class StuckConfig:
    pass


def test_one_pretext_with_a_window_request_sets_the_samples_and_the_others_see_their_first_window():
    config = relpos.resolve_config(modality="eeg", pretext="rp+part", overrides=[
        "encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "modality.window_s=10", "modality.patch_s=1",
        "pretext.part.n_pairs=8", "pretext.rp.tau_pos_s=60", "pretext.rp.tau_neg_s=120"])
    onsets = np.arange(40, dtype=float) * 10.0
    windows = relpos.Windows(x=torch.randn(40, 2, 1000), groups=np.array(["r"] * 40), onsets=onsets,
                             durations=np.full(40, 10.0), info={"sfreq": 100.0})
    modality = relpos.get_modality("eeg")(config.modality_config)
    composed = construct_pretext(relpos.get_pretext("rp+part"), config.pretext_config, modality, config.encoder, windows)
    assert composed.window_request is composed.parts["rp"].window_request  # the loop draws pairs of windows
    received = {}
    original = composed.parts["part"].forward

    def spy(batch, generator):
        received["x"] = batch["x"]
        return original(batch, generator)

    composed.parts["part"].forward = spy
    x = torch.randn(4, 2, 2, 1000)
    batch = {"x": x, "onsets": torch.tensor([[0.0, 30.0]] * 4), "window_index": torch.tensor([[0, 3]] * 4)}
    loss, logs = composed(batch, torch.Generator().manual_seed(0))
    assert torch.equal(received["x"], x[:, 0])  # PART: the first window of each pair
    assert {"rp/loss", "rp/accuracy", "part/loss", "part/center_l2"} <= set(logs)
    assert float(loss.detach()) == pytest.approx(float(logs["rp/loss"]) + float(logs["part/loss"]), rel=1e-6)


class Stuck(relpos.Pretext):
    """A pretext whose loss is its trivial baseline (a constant it cannot lower), plus a tiny gradient."""

    name = "test-stuck"
    Config = StuckConfig
    log_keys = ("loss_baseline",)

    def forward(self, batch, generator):
        touch = 0.0 * self.encoder.cls_token.sum()
        return touch + 1.0, {"loss_baseline": 1.0}


def test_the_stuck_at_baseline_warning_names_the_pretext(tmp_path, capsys):
    class Plugin:
        @relpos.hookimpl
        def register_pretexts(self, register):
            register(Stuck)

    relpos.plugins.register_plugin(Plugin(), "test-compose-stuck")
    try:
        out = tmp_path / "run"
        result = relpos.train(composed_config(out, "part+test-stuck", steps=40, extra=["train.warmup_steps=2"]),
                              data=tiny_windows())
    finally:
        relpos.plugins.unregister_plugin("test-compose-stuck")
    err = capsys.readouterr().err
    assert "pretext 'test-stuck': after 30 of 40 steps the loss (1, mean of the last 4 steps)" in err
    assert "the 'test-stuck/loss_baseline' column of metrics.csv" in err
    assert "test-stuck: mean loss of the last 4 steps 1, 100 % of the trivial baseline 1" in result.baseline_summary


# -- torchrun -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == "win32",
                    reason="needs torch.distributed with gloo and fork-started processes")
def test_two_processes_train_a_composed_run(tmp_path, monkeypatch):
    import test_distributed
    from test_distributed import losses, no_errors, run_processes

    monkeypatch.setattr(test_distributed, "tiny_windows", tiny_windows)  # what the forked processes train on
    outcomes = run_processes(composed_config(tmp_path / "two", "part+sove", steps=4), 2, tmp_path)
    no_errors(outcomes)
    assert torch.equal(outcomes[0]["params"], outcomes[1]["params"])  # the processes agree
    assert len(losses(tmp_path / "two")) == 4
    assert all(np.isfinite(losses(tmp_path / "two")))
    assert [r["step"] for r in rows(tmp_path / "two")] == ["1", "2", "3", "4"]
    assert load_checkpoint(tmp_path / "two", resume=True)["world_size"] == 2
