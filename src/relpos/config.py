"""Run configuration: dataclass defaults < YAML file < ``--modality/--pretext`` < ``--set key=value``.

The resolved configuration has six sections::

    data: PATH            # None: the modality's bundled sample
    out: DIR              # None: runs/<modality>-<pretext>
    modality: {name: eeg, ...the modality's Config fields}
    pretext:  {name: part, ...the pretext's Config fields}
    encoder:  {arch: vit, ...the options the encoder arch names declares (vit: EncoderConfig)}
    train:    {...TrainConfig}

Unknown keys and values of the wrong type are :class:`~relpos.errors.ConfigError` s that name the key
and suggest the nearest valid one. Values are coerced to the field's declared type, so a YAML
``lr: 3e-4`` (which YAML reads as a string) becomes a float, then checked against the range the
field declares with :func:`setting` (:mod:`relpos.ranges`: bounds, choices, finiteness; an integer
must fit an int64, ``train.steps`` at most :data:`MAX_STEPS`, ``train.seed`` in ``[0, 2**32 - 1]``),
all when the config is resolved: ``relpos train --print-config`` already fails on a bad value, and
no data is read first. ``data`` and ``out`` must be non-blank paths when given.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .encoders.vit import EncoderConfig
from .errors import ConfigError, did_you_mean
from .coercion import build_dataclass, check_override_path
from .paths import special_file_kind
from .ranges import (
    MAX_INT, MAX_SEED, MAX_STEPS, Range, bounds, check_fields, check_value, field_range, setting,
)

__all__ = [
    "MAX_INT", "MAX_SEED", "MAX_STEPS", "Range", "RunConfig", "TrainConfig", "bounds", "build_dataclass",
    "check_fields", "check_override_path", "check_path_value", "check_value", "field_range", "resolve_config",
    "setting",
]


#: What ``train.device`` accepts (``torch.device`` names the loop supports).
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:[0-9]+)?"
DEVICE_HELP = "auto, cpu, mps, cuda or cuda:N"


@dataclass
class TrainConfig:
    """Options of the training loop, the same for every pretext."""

    steps: int = setting(300, ge=1, le=MAX_STEPS)
    batch_size: int = setting(16, ge=1, le=2**20)
    lr: float = setting(5e-4, gt=0)
    min_lr: float = setting(1e-6, ge=0)
    weight_decay: float = setting(0.05, ge=0)
    warmup_steps: int = setting(20, ge=0, le=MAX_STEPS)
    grad_clip: float = setting(1.0, ge=0)  # max gradient norm; 0 disables clipping
    seed: int = setting(0, ge=0, le=MAX_SEED)
    device: str = setting("auto", pattern=DEVICE_PATTERN, pattern_help=DEVICE_HELP)
    amp: bool = setting(True)  # bf16 autocast when training on CUDA
    compile: bool = setting(False)  # torch.compile the step's forward (falls back to eager, said once)
    log_every: int = setting(10, ge=1, le=MAX_STEPS)
    ckpt_every: int = setting(50, ge=1, le=MAX_STEPS)
    tensorboard: bool = setting(True)
    progress: bool = setting(True)
    # RankMe (and the online kNN) of the encoder on train.monitor_windows fixed training windows, every
    # N steps and at the last (relpos.monitors); 0: off
    monitor_every: int = setting(100, ge=0, le=MAX_STEPS)
    monitor_windows: int = setting(256, ge=2, le=2**20)
    monitor_knn: bool = setting(False)  # also a kNN on labelled windows of held-out recordings


#: Largest config file read: YAML files of options are a few hundred bytes.
MAX_CONFIG_BYTES = 1 << 20

SECTIONS = ("data", "out", "modality", "pretext", "encoder", "train")
DEFAULT_MODALITY = "eeg"
DEFAULT_PRETEXT = "part"


@dataclass
class RunConfig:
    """A fully resolved run configuration."""

    modality: str
    pretext: str
    modality_config: Any
    pretext_config: Any
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: str | None = None
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Nested plain-Python form, the layout of the YAML file."""
        return {
            "data": self.data,
            "out": self.out,
            "modality": {"name": self.modality, **_plain(dataclasses.asdict(self.modality_config))},
            "pretext": {"name": self.pretext, **_plain(_pretext_section(self.pretext_config))},
            "encoder": _plain(dataclasses.asdict(self.encoder)),
            "train": _plain(dataclasses.asdict(self.train)),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"{self.modality}-{self.pretext}"


def _pretext_section(config: Any) -> dict[str, Any]:
    """A pretext's settings as its YAML section (a composed pretext's: each component's under its name)."""
    as_section = getattr(config, "as_section", None)
    return as_section() if callable(as_section) else dataclasses.asdict(config)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- merging --------------------------------------------------------------------------------------
def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        value = {}
    elif isinstance(value, str) and name in ("modality", "pretext"):
        value = {"name": value}
    elif not isinstance(value, dict):
        raise ConfigError(f"Config section {name!r} must be a mapping, got {value!r}.")
    raw[name] = value
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (an empty file is an empty config)."""
    if not str(path).strip():
        raise ConfigError(
            f"Invalid config file name {str(path)!r}: give the path of a YAML file, e.g. configs/eeg_part.yaml."
        )
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"Config file {str(path)!r} is a directory; give the path of a YAML file in it.")
    if not path.exists():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    kind = special_file_kind(path)
    if kind is not None:  # reading /dev/zero or a pipe nobody writes to never ends
        raise ConfigError(f"Config file {str(path)!r} is {kind}, not a file; give the path of a YAML file.")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"Config file {str(path)!r} holds {path.stat().st_size} bytes; a config is a few hundred, "
                f"and at most {MAX_CONFIG_BYTES} are read."
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Config file {str(path)!r} cannot be read: {exc.strerror or exc}.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Config file {str(path)!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            f"save it as UTF-8."
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}.") from None
    except RecursionError:
        raise ConfigError(
            f"Config file {str(path)!r} nests lists or mappings too deeply to be read "
            f"(a config needs three levels at most)."
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping, got {type(raw).__name__}.")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], value)``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"Invalid --set {text!r}: expected key=value, e.g. train.steps=200.")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Invalid --set {text!r}: expected key=value, e.g. train.steps=200.")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except (yaml.YAMLError, RecursionError):
        parsed = value  # kept as text; the field's type check reports it
    return key.split("."), parsed


def _apply_override(raw: dict[str, Any], path: list[str], value: Any) -> None:
    top = path[0]
    if top not in SECTIONS:
        raise ConfigError(
            f"Unknown config key {'.'.join(path)!r}.{did_you_mean(top, SECTIONS)} "
            f"Top-level keys: {', '.join(SECTIONS)}."
        )
    if top in ("data", "out"):
        if len(path) != 1:
            raise ConfigError(f"Config key {top!r} takes a value, not {'.'.join(path)!r}.")
        raw[top] = value
        return
    if len(path) > 2 and top == "train":
        _check_override_path(TrainConfig, path)
    section = _section(raw, top)
    if len(path) == 1:
        if top in ("modality", "pretext"):
            section["name"] = value
            return
        raise ConfigError(f"Config key {top!r} is a section; set one of its keys, e.g. '{top}.KEY=VALUE'.")
    node = section
    for depth, part in enumerate(path[1:-1], start=2):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Config key {'.'.join(path[:depth])!r} takes a value, not {'.'.join(path)!r}.")
    node[path[-1]] = value


_check_override_path = check_override_path


_PATH_DEFAULTS = {"data": "the modality's bundled sample", "out": "runs/<modality>-<pretext>"}


def check_run_dir_usable(run_dir: str | Path) -> None:
    """Raise :class:`ConfigError` when ``run_dir`` cannot be a run directory, before any data is read.

    It must be a folder or not exist yet, and the nearest existing folder above it must be
    writable; otherwise the run would fail only after its data was loaded.
    """
    run_dir = Path(run_dir)
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == run_dir and not run_dir.is_dir():
        raise ConfigError(f"Run directory {str(run_dir)!r} is a file, not a folder; choose another --out.")
    if not existing.is_dir():
        raise ConfigError(
            f"Cannot create the run directory {str(run_dir)!r}: {str(existing)!r} is a file, not a folder; "
            f"choose another --out."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"Cannot write the run directory {str(run_dir)!r}: {str(existing)!r} is not writable; "
            f"choose another --out."
        )


def check_path_value(key: str, value: Any, default: str | None = None) -> str | None:
    """A path setting (``data``, ``out``, ``--data``, ...) as a string, or None when not given.

    An empty or blank string is an error rather than a silent default (``--out ''`` used to write
    to ``runs/...``; a blank path would mean the current folder), and so are lists, mappings and
    booleans. ``default`` says in the message what leaving the option out gives.
    """
    if value is None:
        return None
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"Invalid value for {key!r}: expected a path, got {value!r}.")
    value = str(value)
    default = default if default is not None else _PATH_DEFAULTS.get(key.lstrip("-"), "")
    if not value.strip():
        hint = f"; leave it out for the default ({default})" if default else ""
        raise ConfigError(f"Invalid value for {key!r}: expected a path, got {value!r}{hint}.")
    if "\0" in value:
        raise ConfigError(f"Invalid value for {key!r}: a path cannot contain a NUL character, got {value!r}.")
    return value


def resolve_config(
    config_file: str | Path | Mapping[str, Any] | None = None,
    modality: str | None = None,
    pretext: str | None = None,
    overrides: Iterable[str] = (),
    stored: bool = False,
) -> RunConfig:
    """Resolve a run configuration.

    Parameters
    ----------
    config_file : path or mapping, optional
        A YAML file (or an already-loaded dict in the same layout).
    modality, pretext : str, optional
        Names that override the file's ``modality.name`` / ``pretext.name``.
    overrides : iterable of str
        ``"key.sub=value"`` strings applied last, in order.
    stored : bool
        The configuration was written by relpos (a checkpoint's): encoder options that an older
        relpos wrote for every encoder are left out where the encoder does not declare them
        (see :func:`relpos.encoders.resolve_encoder_options`).

    Returns
    -------
    RunConfig
    """
    from .compose import get_pretext
    from .plugins import get_modality

    if config_file is None:
        raw: dict[str, Any] = {}
    elif isinstance(config_file, Mapping):
        raw = _plain(dict(config_file))
    else:
        raw = load_yaml(config_file)
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(
                f"Unknown config key {key!r}.{did_you_mean(key, SECTIONS)} Top-level keys: {', '.join(SECTIONS)}."
            )
    if isinstance(raw.get("pretext"), list):  # several pretexts, each with its settings (relpos.compose)
        from .compose import section_from_list

        raw["pretext"] = section_from_list(raw["pretext"])
    for name in ("modality", "pretext", "encoder", "train"):
        _section(raw, name)
    if modality is not None:
        raw["modality"]["name"] = modality
    if pretext is not None:
        raw["pretext"]["name"] = pretext
    nested_overrides = []  # modality/pretext paths below a key, checked once their classes are known
    for text in overrides:
        path, value = parse_override(text)
        _apply_override(raw, path, value)
        if len(path) > 2 and path[0] in ("modality", "pretext", "encoder"):
            nested_overrides.append(path)

    mod_values = dict(raw["modality"])
    pre_values = dict(raw["pretext"])
    mod_name = str(mod_values.pop("name", None) or DEFAULT_MODALITY)
    pre_name = str(pre_values.pop("name", None) or DEFAULT_PRETEXT)
    mod_cls = get_modality(mod_name)
    pre_cls = get_pretext(pre_name)
    if not pre_cls.supports(mod_cls):
        supported = (
            ", ".join(repr(m) for m in pre_cls.modalities)
            if pre_cls.modalities is not None
            else f"modalities with at least {pre_cls.min_axes} axes"
        )
        raise ConfigError(
            f"Pretext {pre_name!r} does not support modality {mod_name!r}; it supports {supported}."
        )
    from .encoders import DEFAULT_ARCH, arch_value, get_encoder_class, resolve_encoder_options

    for path in nested_overrides:
        if path[0] == "encoder":  # the keys of the encoder that encoder.arch names
            encoder_cls = get_encoder_class(str(arch_value(raw["encoder"].get("arch", DEFAULT_ARCH))))
            check_override_path(encoder_cls.Config, path)
        elif path[0] == "pretext" and hasattr(pre_cls, "build_config"):  # a composed pretext's component
            pre_cls.check_override(path)
        else:
            check_override_path(mod_cls.Config if path[0] == "modality" else pre_cls.Config, path)
    data = check_path_value("data", raw.get("data"))
    out = check_path_value("out", raw.get("out"))
    modality_config = build_dataclass(mod_cls.Config, mod_values, "modality")
    if hasattr(pre_cls, "build_config"):  # a composed pretext: each component's section (relpos.compose)
        pretext_config = pre_cls.build_config(pre_values)
    else:
        pretext_config = build_dataclass(pre_cls.Config, pre_values, "pretext")
    # the options of the encoder encoder.arch names; the pretext's defaults where it declares them
    encoder = resolve_encoder_options(raw["encoder"], getattr(pre_cls, "encoder_defaults", {}), stored=stored)
    from .encoders import check_encoder_arch

    check_encoder_arch(encoder, mod_cls, pre_cls)  # a registered encoder that fits the data and the pretext
    pre_cls.check_encoder(encoder)  # e.g. position embeddings for a pretext that passes no centres
    pre_cls.check_config(pretext_config, mod_cls, encoder)  # e.g. an option that needs two axes
    return RunConfig(
        modality=mod_name,
        pretext=pre_name,
        modality_config=modality_config,
        pretext_config=pretext_config,
        encoder=encoder,
        train=build_dataclass(TrainConfig, raw["train"], "train"),
        data=data,
        out=out,
    )


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Rebuild a :class:`RunConfig` from :meth:`RunConfig.to_dict` output (e.g. a checkpoint)."""
    return resolve_config(values, stored=True)
