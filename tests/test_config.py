"""Config resolution: defaults < YAML < --modality/--pretext < --set, with typed, checked keys."""

from __future__ import annotations

import textwrap

import pytest

from relpos.config import RunConfig, config_from_dict, resolve_config
from relpos.errors import ConfigError, PluginError


def write_yaml(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_without_any_input():
    cfg = resolve_config()
    assert isinstance(cfg, RunConfig)
    assert (cfg.modality, cfg.pretext) == ("eeg", "part")
    assert cfg.train.steps == 300 and cfg.train.lr == 5e-4
    assert cfg.encoder.dim == 192
    assert cfg.pretext_config.n_pairs == 2048
    assert cfg.modality_config.window_s == 30.0
    assert cfg.data is None and cfg.out is None


def test_yaml_overrides_defaults(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        modality:
          name: image
          patch_size: 8
        pretext:
          name: part-grid
          n_pairs: 64
        encoder:
          dim: 48
        train:
          steps: 50
        data: images/
        """,
    )
    cfg = resolve_config(path)
    assert (cfg.modality, cfg.pretext) == ("image", "part-grid")
    assert cfg.modality_config.patch_size == 8
    assert cfg.pretext_config.n_pairs == 64
    assert cfg.encoder.dim == 48 and cfg.encoder.depth == 6  # unset keys keep their defaults
    assert cfg.train.steps == 50 and cfg.train.batch_size == 16
    assert cfg.data == "images/"


def test_names_given_as_arguments_beat_the_yaml(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        modality: image
        pretext: {name: part-grid, n_pairs: 64}
        """,
    )
    cfg = resolve_config(path, modality="eeg", pretext="part")
    assert (cfg.modality, cfg.pretext) == ("eeg", "part")
    assert cfg.pretext_config.n_pairs == 64  # the YAML's options survive the rename


def test_overrides_beat_arguments_and_yaml(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        pretext: {name: part, n_pairs: 64}
        train: {steps: 50, seed: 3}
        """,
    )
    cfg = resolve_config(
        path,
        modality="image",
        pretext="part-grid",
        overrides=["train.steps=7", "pretext.n_pairs=32", "pretext=part", "modality=eeg", "out=runs/x"],
    )
    assert (cfg.modality, cfg.pretext) == ("eeg", "part")
    assert cfg.train.steps == 7
    assert cfg.train.seed == 3  # from the YAML, not overridden
    assert cfg.pretext_config.n_pairs == 32
    assert cfg.out == "runs/x"
    assert str(cfg.run_dir()) == "runs/x"


def test_later_overrides_win():
    cfg = resolve_config(overrides=["train.steps=5", "train.steps=9"])
    assert cfg.train.steps == 9


def test_run_dir_defaults_to_modality_and_pretext():
    cfg = resolve_config(modality="image", pretext="part-grid")
    assert str(cfg.run_dir()).replace("\\", "/") == "runs/image-part-grid"


def test_yaml_string_learning_rate_is_coerced_to_float(tmp_path):
    # PyYAML (YAML 1.1) reads 3e-4 (no dot) as the string "3e-4"
    import yaml

    assert yaml.safe_load("lr: 3e-4") == {"lr": "3e-4"}
    cfg = resolve_config(write_yaml(tmp_path, "train:\n  lr: 3e-4\n"))
    assert isinstance(cfg.train.lr, float)
    assert cfg.train.lr == 0.0003


def test_set_list_value_becomes_a_tuple_of_floats():
    cfg = resolve_config(modality="image", overrides=["pretext.scale_range=[0.5, 2]"])
    assert cfg.pretext_config.scale_range == (0.5, 2.0)
    assert isinstance(cfg.pretext_config.scale_range, tuple)
    assert all(isinstance(v, float) for v in cfg.pretext_config.scale_range)


@pytest.mark.parametrize(
    "override, attr, expected",
    [
        ("train.amp=no", "amp", False),
        ("train.amp=true", "amp", True),
        ("train.steps=2e2", "steps", 200),  # a whole number written as a float is accepted
        ("train.lr=1", "lr", 1.0),
        ("train.device=cpu", "device", "cpu"),
    ],
)
def test_set_values_are_coerced_to_the_field_type(override, attr, expected):
    value = getattr(resolve_config(overrides=[override]).train, attr)
    assert value == expected
    assert type(value) is type(expected)


def test_unknown_key_suggests_the_nearest_one():
    with pytest.raises(ConfigError) as info:
        resolve_config(overrides=["train.stpes=5"])
    message = str(info.value)
    assert "train.stpes" in message
    assert "Did you mean 'steps'" in message


def test_unknown_key_in_yaml_suggests_the_nearest_one(tmp_path):
    path = write_yaml(tmp_path, "encoder:\n  dpeth: 2\n")
    with pytest.raises(ConfigError, match="Did you mean 'depth'"):
        resolve_config(path)


def test_unknown_top_level_key_in_yaml(tmp_path):
    path = write_yaml(tmp_path, "trian:\n  steps: 5\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path)
    assert "'trian'" in str(info.value)
    assert "Did you mean 'train'" in str(info.value)


def test_unknown_top_level_key_in_override():
    with pytest.raises(ConfigError, match="Did you mean 'encoder'"):
        resolve_config(overrides=["encodr.dim=64"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.steps=abc", "train.steps"),
        ("train.lr=fast", "train.lr"),
        ("train.steps=2.5", "train.steps"),
        ("train.amp=maybe", "train.amp"),
        ("encoder.dim=[1, 2]", "encoder.dim"),
        ("pretext.scale_range=[1]", "pretext.scale_range"),
    ],
)
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        resolve_config(overrides=[override])
    assert repr(key) in str(info.value)


def test_invalid_value_is_rejected_by_validation():
    with pytest.raises(ConfigError, match="train.steps"):
        resolve_config(overrides=["train.steps=0"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        resolve_config(overrides=["train.steps"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(tmp_path / "nope.yaml")


def test_unknown_modality_suggests_eeg():
    with pytest.raises(PluginError) as info:
        resolve_config(modality="eg")
    assert "Did you mean 'eeg'" in str(info.value)
    assert "'image'" in str(info.value)  # and lists what exists


def test_unknown_pretext_suggests_part():
    with pytest.raises(PluginError, match="Did you mean 'part'"):
        resolve_config(pretext="prat")


def test_to_dict_round_trip(tmp_path):
    cfg = resolve_config(
        modality="image",
        pretext="part",
        overrides=[
            "pretext.scale_range=[0.5, 2]",
            "pretext.predict_size=true",
            "train.lr=3e-4",
            "encoder.dim=32",
            "encoder.heads=2",
            "data=some/folder",
        ],
    )
    as_dict = cfg.to_dict()
    assert as_dict["modality"]["name"] == "image"
    assert as_dict["pretext"]["scale_range"] == [0.5, 2.0]  # plain lists, YAML-friendly
    again = resolve_config(as_dict)
    assert again == cfg
    assert config_from_dict(as_dict) == cfg
    # and through the YAML text written next to a run
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert resolve_config(path) == cfg


# -- values checked where they enter (issue 9, section 2) ----------------------------------------
def run_cli(argv, capsys):
    """``relpos`` in-process: exit status and the lines it wrote to stderr."""
    from relpos.cli import main

    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


@pytest.mark.parametrize(
    "override, message",
    [
        # the inputs, and others of the same kinds
        ("encoder.heads=0", "Invalid value for 'encoder.heads': allowed an integer >= 1 and <= 65536, got 0."),
        ("encoder.heads=7", "'encoder.dim' (192) must be divisible by 'encoder.heads' (7)."),
        ("train.seed=-1", "Invalid value for 'train.seed': allowed an integer >= 0 and <= 4294967295, got -1."),
        ("train.seed=4294967296", "Invalid value for 'train.seed': allowed an integer >= 0 and <= 4294967295, got 4294967296."),
        ("train.steps=1e30", "Invalid value for 'train.steps': allowed an integer >= 1 and <= 100000000, got 1e+30."),
        ("train.steps=100000001", "Invalid value for 'train.steps': allowed an integer >= 1 and <= 100000000, got 100000001."),
        ("train.weight_decay=-1", "Invalid value for 'train.weight_decay': allowed a finite number >= 0, got -1.0."),
        ("train.grad_clip=.nan", "Invalid value for 'train.grad_clip': allowed a finite number >= 0, got nan."),
        ("train.grad_clip=-.inf", "Invalid value for 'train.grad_clip': allowed a finite number >= 0, got -inf."),
        ("train.lr=.inf", "Invalid value for 'train.lr': allowed a finite number > 0, got inf."),
        ("train.device=gpu", "Invalid value for 'train.device': allowed auto, cpu, mps, cuda or cuda:N, got 'gpu'."),
        ("encoder.pos_embed=sincoss", "Invalid value for 'encoder.pos_embed': allowed 'none' or 'sincos', got 'sincoss'. Did you mean 'sincos'?"),
        ("pretext.n_patches=1", "Invalid value for 'pretext.n_patches': allowed 0 or an integer >= 2 and <= 65536, got 1."),
        ("modality.sfreq=-100", "Invalid value for 'modality.sfreq': allowed a finite number > 0 and <= 1000000.0, got -100.0."),
    ],
)
def test_bad_value_fails_print_config_with_one_sentence(override, message, capsys):
    status, out, err = run_cli(["train", "--print-config", "--set", override], capsys)
    assert (status, out, err) == (2, "", [f"relpos: error: {message}"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pretext.scale_range=[2.0, 0.5]"], "Invalid value for 'pretext.scale_range': expected [low, high] with low <= high, got [2.0, 0.5]."),
        (["pretext.aspect_range=[0, 1]"], "Invalid value for 'pretext.aspect_range': every item must be a finite number > 0, got [0.0, 1.0]."),
        (["pretext.scale_range=[0.5, .inf]"], "Invalid value for 'pretext.scale_range': every item must be a finite number > 0, got [0.5, inf]."),
        (["pretext.predict_size=true"], "'pretext.predict_size' needs patches of varying size"),
        (["pretext.name=part-grid", "pretext.scale_range=[0.5, 2]"], "PART-grid samples fixed grid patches"),
        (["modality.window_s=2", "modality.patch_s=3"], "'modality.patch_s' (3.0 s) is longer than 'modality.window_s' (2.0 s)."),
        (["modality.subject_pattern=(sub"], "Invalid value for 'modality.subject_pattern': '(sub' is not a regular expression"),
    ],
)
def test_checks_that_used_to_wait_for_the_data_fail_at_print_config(overrides, message, capsys):
    # Before, these were found after the EEG was read and preprocessed (or on the first step).
    argv = ["train", "--print-config"] + [a for o in overrides for a in ("--set", o)]
    status, out, err = run_cli(argv, capsys)
    assert status == 2 and out == "" and len(err) == 1
    assert err[0].startswith(f"relpos: error: {message}")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.steps.foo=1", "Config key 'train.steps' takes a value, not 'train.steps.foo'."),
        ("encoder.dim.x.y=1", "Config key 'encoder.dim' takes a value, not 'encoder.dim.x.y'."),
        ("modality.window_s.unit=s", "Config key 'modality.window_s' takes a value, not 'modality.window_s.unit'."),
        ("pretext.scale_range.low=1", "Config key 'pretext.scale_range' takes a value, not 'pretext.scale_range.low'."),
    ],
)
def test_set_below_a_plain_value_is_one_sentence(override, message, capsys):
    assert run_cli(["train", "--print-config", "--set", override], capsys) == (2, "", [f"relpos: error: {message}"])


def test_set_below_a_value_set_earlier_is_one_sentence():
    with pytest.raises(ConfigError, match=r"^Config key 'train.steps' takes a value, not 'train.steps.foo'.$"):
        resolve_config(overrides=["train.steps=5", "train.steps.foo=1"])


def test_set_below_a_mapping_field_still_works():
    cfg = resolve_config(overrides=["modality.label_map.W=Wake", "modality.label_map.R=REM"])
    assert cfg.modality_config.label_map == {"W": "Wake", "R": "REM"}


def test_data_inspect_set_below_a_plain_value_is_one_sentence(capsys):
    status, _, err = run_cli(["data", "inspect", "--set", "modality.sfreq.x=1"], capsys)
    assert (status, err) == (2, ["relpos: error: Config key 'modality.sfreq' takes a value, not 'modality.sfreq.x'."])


def test_config_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  steps: 5  # r\xe9sum\xe9\n".encode("latin-1"))
    status, _, err = run_cli(["train", "--print-config", "--config", str(path)], capsys)
    assert status == 2
    assert err == [
        f"relpos: error: Config file {str(path)!r} is not UTF-8 text (byte 0xe9 at offset 22); save it as UTF-8."
    ]


def test_config_file_that_is_a_directory(tmp_path, capsys):
    status, _, err = run_cli(["train", "--print-config", "--config", str(tmp_path)], capsys)
    assert (status, err) == (2, [f"relpos: error: Config file {str(tmp_path)!r} is a directory; give the path of a YAML file in it."])


def test_config_file_that_cannot_be_read(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    path = write_yaml(tmp_path, "train:\n  steps: 5\n")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    # chmod 000 does not stop root (CI containers), so the refusal is simulated.
    monkeypatch.setattr(Path, "read_bytes", refuse)
    status, _, err = run_cli(["train", "--print-config", "--config", str(path)], capsys)
    assert (status, err) == (2, [f"relpos: error: Config file {str(path)!r} cannot be read: Permission denied."])


def test_empty_config_file_name(capsys):
    status, _, err = run_cli(["train", "--print-config", "--config", ""], capsys)
    assert status == 2 and len(err) == 1 and "Invalid config file name ''" in err[0]


@pytest.mark.parametrize("flag", ["--out", "--data"])
@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_empty_out_or_data_is_an_error_not_the_default(flag, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default run directory would be runs/eeg-part under here
    status, out, err = run_cli(["train", "--steps", "1", flag, value], capsys)
    assert status == 2 and out == "" and len(err) == 1
    assert err[0].startswith(f"relpos: error: Invalid value for '{flag}': expected a path, got {value!r}; leave it out")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override", ["out=", "data=' '", "out=[a, b]", "data={x: 1}", "out=true"])
def test_out_and_data_in_set_or_yaml_are_checked_too(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^Invalid value for '{key}': expected a path"):
        resolve_config(overrides=[override])


def test_a_plugin_field_without_a_range_still_gets_finite_and_int64_checks():
    import dataclasses

    from relpos.config import build_dataclass, setting

    @dataclasses.dataclass
    class ThirdPartyConfig:
        gain: float = 1.0
        count: int = 3
        levels: list[float] = dataclasses.field(default_factory=lambda: [1.0])
        window: int = setting(8, ge=4, le=64)

    assert build_dataclass(ThirdPartyConfig, {"gain": "-2.5", "count": -7}, "modality").gain == -2.5
    with pytest.raises(ConfigError, match=r"^Invalid value for 'modality.gain': allowed a finite number, got nan.$"):
        build_dataclass(ThirdPartyConfig, {"gain": float("nan")}, "modality")
    with pytest.raises(ConfigError, match=r"'modality.count': allowed an integer, got 1e\+20"):
        build_dataclass(ThirdPartyConfig, {"count": 10**20}, "modality")
    with pytest.raises(ConfigError, match=r"'modality.levels': every item must be a finite number, got \[1.0, inf\]"):
        build_dataclass(ThirdPartyConfig, {"levels": "[1, .inf]"}, "modality")
    with pytest.raises(ConfigError, match=r"'modality.window': allowed an integer >= 4 and <= 64, got 65"):
        build_dataclass(ThirdPartyConfig, {"window": 65}, "modality")
    assert build_dataclass(ThirdPartyConfig, {"window": 64}, "modality").window == 64  # the bound itself is allowed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", ""], "Invalid value for 'RUN_DIR': expected a path, got ''."),
        (["eval", "some/run", "--data", " "], "Invalid value for '--data': expected a path, got ' '; leave it out for the default (the data the run was trained on)."),
        (["data", "inspect", ""], "Invalid value for 'PATH': expected a path, got ''; leave it out for the default (the modality's sample)."),
    ],
)
def test_blank_paths_of_eval_and_inspect_are_errors_not_the_current_folder(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(argv, capsys) == (2, "", [f"relpos: error: {message}"])


@pytest.mark.parametrize("override", ["pretext.scale_range=[1,", "pretext.scale_range=a: b: c", "pretext.scale_range=" + "[" * 1500])
def test_unparseable_list_value_is_one_sentence(override, capsys):
    status, out, err = run_cli(["train", "--print-config", "--set", override], capsys)
    assert status == 2 and out == "" and len(err) == 1
    assert err[0].startswith("relpos: error: Invalid value for 'pretext.scale_range': expected a list")


def test_config_file_nested_too_deeply(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("train: " + "[" * 1500 + "]" * 1500 + "\n")
    status, _, err = run_cli(["train", "--print-config", "--config", str(path)], capsys)
    assert status == 2 and len(err) == 1 and "nests lists or mappings too deeply" in err[0]


def test_a_2d_only_option_on_a_1d_modality_fails_before_the_data(capsys):
    # Before, the EEG was read and preprocessed first; now --print-config already fails.
    status, out, err = run_cli(["train", "--print-config", "--set", "pretext.aspect_range=[0.5, 2]"], capsys)
    assert (status, out) == (2, "")
    assert err == [
        "relpos: error: 'pretext.aspect_range' needs at least 2 axes, but modality 'eeg' has 1 (time); "
        "use 'pretext.scale_range', got [0.5, 2.0]."
    ]
    image = resolve_config(modality="image", overrides=["pretext.scale_range=[0.5, 2]", "pretext.aspect_range=[0.5, 2]"])
    assert image.pretext_config.aspect_range == (0.5, 2.0)


def test_cross_attention_heads_that_do_not_divide_dim_fail_before_the_data(capsys):
    status, _, err = run_cli(["train", "--print-config", "--set", "pretext.head_heads=5"], capsys)
    assert (status, err) == (2, ["relpos: error: 'pretext.head_heads' (5) must divide 'encoder.dim' (192)."])
    # the head that has no attention does not care
    assert resolve_config(overrides=["pretext.head_heads=5", "pretext.head=pairwise_mlp"]).pretext_config.head_heads == 5


def test_an_encoder_too_large_for_any_machine_is_refused_before_it_is_built(capsys):
    # Each value is in range; together they ask for 6 blocks x 12 x 65536² = 3.1e11 weights.
    status, _, err = run_cli(["train", "--print-config", "--set", "encoder.dim=65536", "--set", "encoder.heads=1"], capsys)
    assert status == 2 and len(err) == 1
    assert "has about 3.1e+11 parameters; at most 1e+10 are allowed" in err[0]
    vit_b = resolve_config(overrides=["encoder.dim=768", "encoder.depth=12", "encoder.heads=12"]).encoder
    assert vit_b.approx_parameters() == 84_934_656  # 12 x (4 + 8) x 768², timm's ViT-B blocks without biases/norms


def test_config_file_that_is_a_pipe_or_device_is_refused_without_reading(tmp_path, capsys):
    import os

    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)  # opening it would block: nobody writes to it
    for path, kind in ((str(fifo), "a named pipe (FIFO)"), ("/dev/zero", "a character device")):
        status, _, err = run_cli(["train", "--print-config", "--config", path], capsys)
        assert (status, err) == (2, [f"relpos: error: Config file {path!r} is {kind}, not a file; give the path of a YAML file."])


def test_config_file_larger_than_any_config_is_refused(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text("#" * (1 << 20) + "\n")  # 1 MiB of comment plus a newline: one byte too many
    status, _, err = run_cli(["train", "--print-config", "--config", str(path)], capsys)
    assert (status, err) == (2, [f"relpos: error: Config file {str(path)!r} holds 1048577 bytes; a config is a few hundred, and at most 1048576 are read."])


@pytest.mark.parametrize(
    "argv, allowed_up_to",
    [(["--seed", "-1"], 4294967295), (["--seed", "4294967296"], 4294967295), (["--seed", "4294967295", "--repeats", "2"], 4294967294)],
)
def test_eval_seed_outside_numpy_range_fails_before_the_run_is_opened(argv, allowed_up_to, tmp_path, capsys):
    status, _, err = run_cli(["eval", str(tmp_path / "no-run"), *argv], capsys)
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"relpos: error: Invalid value for 'seed': expected an integer from 0 to {allowed_up_to} ")


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--steps", "1e30", "Invalid value for 'train.steps': allowed an integer >= 1 and <= 100000000, got 1e+30."),
        ("--steps", "ten", "Invalid value for 'train.steps': expected an integer, got 'ten'."),
        ("--seed", "-5", "Invalid value for 'train.seed': allowed an integer >= 0 and <= 4294967295, got -5."),
    ],
)
def test_steps_and_seed_flags_get_the_same_sentence_as_set(flag, value, message, capsys):
    assert run_cli(["train", "--print-config", flag, value], capsys) == (2, "", [f"relpos: error: {message}"])


def test_steps_flag_reads_numbers_as_set_does():
    from relpos.cli import build_parser

    assert build_parser().parse_args(["train", "--steps", "1e3"]).steps == "1e3"  # 1000 once resolved
    assert resolve_config(overrides=["train.steps=1e3"]).train.steps == 1000


def test_a_config_built_in_python_gets_the_same_checks():
    from relpos.encoders.vit import EncoderConfig

    EncoderConfig(dim=64, heads=2, mlp_ratio=2).validate()  # an int where a float is declared is fine
    with pytest.raises(ConfigError, match=r"^Invalid value for 'encoder.dim': expected an integer, got '64'.$"):
        EncoderConfig(dim="64", heads=2).validate()
    with pytest.raises(ConfigError, match=r"^Invalid value for 'encoder.heads': allowed an integer >= 1"):
        EncoderConfig(heads=0).validate()  # used to be a ZeroDivisionError


def test_out_that_is_a_file_or_below_one_fails_before_the_data(tmp_path, monkeypatch, capsys):
    import relpos.training

    def no_data(*args, **kwargs):
        raise AssertionError("the data was opened before --out was checked")

    monkeypatch.setattr(relpos.training, "open_data", no_data)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a run\n")
    status, _, err = run_cli(["train", "--out", str(a_file)], capsys)
    assert (status, err) == (2, [f"relpos: error: Run directory {str(a_file)!r} is a file, not a folder; choose another --out."])
    below = a_file / "runs" / "one"
    status, _, err = run_cli(["train", "--out", str(below)], capsys)
    assert (status, err) == (2, [
        f"relpos: error: Cannot create the run directory {str(below)!r}: {str(a_file)!r} is a file, not a folder; "
        f"choose another --out."
    ])
    assert a_file.read_text() == "not a run\n"


def test_out_in_a_folder_that_cannot_be_written(tmp_path, monkeypatch, capsys):
    import os

    # root ignores permission bits, so the refusal is simulated
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(tmp_path))
    status, _, err = run_cli(["train", "--out", str(tmp_path / "run")], capsys)
    assert (status, err) == (2, [
        f"relpos: error: Cannot write the run directory {str(tmp_path / 'run')!r}: {str(tmp_path)!r} is not writable; "
        f"choose another --out."
    ])
    assert not (tmp_path / "run").exists()


def test_eval_candidate_lists_must_not_be_empty():
    from relpos.config import build_dataclass
    from relpos.evaluation import EvalConfig

    with pytest.raises(ConfigError, match=r"^Invalid value for 'eval.cs': allowed at least 1 item, got \[\].$"):
        build_dataclass(EvalConfig, {"cs": "[]"}, "eval")
    with pytest.raises(ConfigError, match=r"^Invalid value for 'eval.ks': every item must be an integer >= 1"):
        build_dataclass(EvalConfig, {"ks": [10, 0]}, "eval")
    assert build_dataclass(EvalConfig, {"ks": "[5]"}, "eval").ks == [5]
