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
