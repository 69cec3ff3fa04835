"""Every config field of the core and of every registered plugin rejects bad values where they enter.

The cases are generated from the registry and from each field's declared :class:`relpos.config.Range`,
so a new modality, pretext or field is covered without touching this file. Each field gets a value of
the wrong type, a non-finite value and a value outside its range; `relpos train` (and `relpos eval` for
the ``eval`` section) must answer with exit status 2, one line on stderr naming the key, and no run
directory. A category that cannot apply to a field (a bool has no non-finite value) is skipped with
the reason in the test id.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from relpos.cli import main
from relpos.config import MAX_INT, TrainConfig, field_range
from relpos.encoders.vit import EncoderConfig
from relpos.evaluation import EvalConfig
from relpos.plugins import get_registry

CATEGORIES = ("wrong-type", "non-finite", "out-of-range")


def _sections():
    """``(section, Config class, modality, pretext, built_in)`` for the core and every registered plugin."""
    registry = get_registry()
    modalities = {name: registry.get("modality", name) for name in registry.names("modality")}
    pretexts = {name: registry.get("pretext", name) for name in registry.names("pretext")}
    yield "train", TrainConfig, "eeg", "part", True
    yield "encoder", EncoderConfig, "eeg", "part", True
    yield "eval", EvalConfig, "eeg", "part", True
    for name, cls in modalities.items():
        partner = next((p for p, pcls in pretexts.items() if pcls.supports(cls)), None)
        if partner is not None:
            yield "modality", cls.Config, name, partner, _built_in(cls)
    for name, cls in pretexts.items():
        partner = next((m for m, mcls in modalities.items() if cls.supports(mcls)), None)
        if partner is not None:
            yield "pretext", cls.Config, partner, name, _built_in(cls)


def _built_in(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("relpos", "relpos_modalities", "relpos_plugins")


def _kind(tp) -> tuple[str, typing.Any]:
    """The field's kind (``int``, ``float``, ``bool``, ``str``, ``list``, ``tuple``, ``dict``) and item type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return origin.__name__, (args[0] if args else float)
    if origin is dict or tp is dict:
        return "dict", None
    return tp.__name__, None


def _yaml(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def _outside(rng, integer: bool):
    """A number outside ``rng`` (and not one of its extra allowed values), or None."""
    candidates = []
    if rng.ge is not None:
        candidates.append(rng.ge - max(1, abs(rng.ge)))
    if rng.gt is not None:
        candidates.append(rng.gt)
    if rng.le is not None:
        candidates.append(rng.le + max(1, abs(rng.le)))
    if rng.lt is not None:
        candidates.append(rng.lt)
    if integer:
        candidates.append(MAX_INT + 1)  # no int field may exceed an int64, declared or not
    for value in candidates:
        value = int(value) if integer else float(value)
        if value not in rng.also:
            return value
    return None


def _bad_value(category: str, tp, rng) -> tuple[str | None, str]:
    """The ``--set`` value for ``category``, or ``(None, why the category does not apply)``."""
    kind, item = _kind(tp)
    item_kind = getattr(item, "__name__", "")
    if category == "wrong-type":
        return {
            "int": ("abc", ""), "float": ("abc", ""), "bool": ("maybe", ""), "str": ("[1, 2]", ""),
            "list": ("[abc]", ""), "tuple": ("[abc, def]", ""), "dict": ("[1, 2]", ""),
        }[kind]
    if category == "non-finite":
        if kind in ("int", "float"):
            return ".nan" if kind == "float" else ".inf", ""
        if kind in ("list", "tuple") and item_kind in ("int", "float"):
            return ("[.nan, .nan]" if kind == "tuple" else "[.inf]"), ""
        return None, f"a {kind} has no non-finite value"
    # out-of-range
    if kind == "bool":
        return None, "a bool has no out-of-range value"
    if kind == "dict":
        return None, "a free mapping has no out-of-range value"
    if kind == "str":
        if rng.choices is not None:
            return "not-one-of-the-choices", ""
        if rng.pattern is not None:
            return "no such thing!", ""
        return None, f"free text ({rng.free or 'any string'})"
    integer = kind == "int" or item_kind == "int"
    bad = _outside(rng, integer)
    if bad is None:
        return None, "no bound declared"
    if kind == "tuple":
        return _yaml([bad, bad]), ""
    if kind == "list":
        return _yaml([bad]), ""
    return _yaml(bad), ""


def _cases():
    for section, config_cls, modality, pretext, _ in _sections():
        hints = typing.get_type_hints(config_cls)
        for f in dataclasses.fields(config_cls):
            if not f.init:
                continue
            rng = field_range(f)
            for category in CATEGORIES:
                from relpos.config import Range

                value, why = _bad_value(category, hints[f.name], rng or Range())
                key = f"{section}.{f.name}"
                where = f"{modality}-{pretext}"
                if value is None:
                    yield pytest.param(
                        section, modality, pretext, key, None, id=f"{key}[{where}]-{category}-skipped:{why}",
                        marks=pytest.mark.skip(reason=why),
                    )
                else:
                    yield pytest.param(section, modality, pretext, key, value, id=f"{key}[{where}]-{category}={value}")


def _run(section, modality, pretext, key, value, tmp_path):
    run_dir = tmp_path / "run"
    if section == "eval":
        # The evaluation settings are checked before the run directory is opened: a run that does
        # not exist shows that no data and no checkpoint is read for a bad value.
        argv = ["eval", str(run_dir), "--set", f"{key}={value}"]
    else:
        argv = [
            "train", "--modality", modality, "--pretext", pretext, "--out", str(run_dir),
            "--steps", "1", "--no-progress", "--set", f"{key}={value}",
        ]
    return main(argv), run_dir


@pytest.mark.parametrize(("section", "modality", "pretext", "key", "value"), list(_cases()))
def test_bad_value_is_one_line_exit_2_and_no_run_directory(section, modality, pretext, key, value, tmp_path, capsys):
    status, run_dir = _run(section, modality, pretext, key, value, tmp_path)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("relpos: error: ") and f"'{key}'" in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert not run_dir.exists()


def test_every_built_in_field_declares_its_range():
    missing = [
        f"{section}.{f.name} ({config_cls.__qualname__})"
        for section, config_cls, _, _, built_in in _sections()
        if built_in
        for f in dataclasses.fields(config_cls)
        if f.init and field_range(f) is None
    ]
    assert missing == []


def test_the_cases_cover_every_section_and_each_category():
    ids = [p.id for p in _cases()]
    for section in ("train.", "encoder.", "eval.", "modality.", "pretext."):
        assert any(i.startswith(section) for i in ids)
    run = [i for i in ids if "-skipped:" not in i]
    for category in CATEGORIES:
        assert sum(f"-{category}=" in i for i in run) >= 20, category
