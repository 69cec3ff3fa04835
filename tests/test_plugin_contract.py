"""The plugin contract as a third-party author meets it: what ``forward`` must return is checked at a
run's first step and refused in one sentence naming the pretext (exit 2, nothing left on disk), and
the building blocks docs/plugins.md names are documented with their exact signatures."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_metrics
from test_plugins import _documented_form

import relpos
import relpos.plugins
from relpos.cli import main
from relpos.errors import PluginError
from relpos.pretext import FORWARD_CONTRACT, check_forward_output

REPO = Path(__file__).resolve().parents[1]
SMALL = ["encoder.dim=32", "encoder.depth=1", "encoder.heads=2", "train.batch_size=2"]


@dataclass
class NoOptions:
    pass


class MeanPretext(relpos.Pretext):
    """Fits one number to the batch mean: the smallest pretext that trains a parameter."""

    name = "mean"
    Config = NoOptions
    log_keys = ("batch_mean",)
    #: What forward returns, given (loss, batch mean); a subclass per way of breaking the contract.
    returns = staticmethod(lambda loss, mean: (loss, {"batch_mean": mean}))

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        self.level = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch, generator):
        mean = batch["x"].mean()
        return type(self).returns((mean - self.level) ** 2, mean.detach())


def pretext_returning(name, returns, log_keys=("batch_mean",)):
    return type(name.title().replace("-", ""), (MeanPretext,),
                {"name": name, "returns": staticmethod(returns), "log_keys": log_keys})


BROKEN = {
    "bare-loss": (lambda loss, mean: loss, "returned a 0-d float32 tensor from forward"),
    "per-sample-loss": (lambda loss, mean: (loss.expand(2), {}), "returned a tensor of shape (2,) as the loss from forward"),
    "detached-loss": (
        lambda loss, mean: (loss.detach(), {}),
        "returned a loss without a gradient from forward (computed under torch.no_grad(), or from detached "
        "values), so no parameter would train",
    ),
    "logs-as-list": (lambda loss, mean: (loss, [mean]), "returned a list of 1 item as the logs from forward"),
    "undeclared-key": (
        lambda loss, mean: (loss, {"batch_mean": mean, "accuracy": 0.5}),
        "logged 'accuracy', not in its log_keys ('batch_mean'; add the key there to log it)",
    ),
    "vector-log": (lambda loss, mean: (loss, {"batch_mean": mean.expand(3)}), "logged 'batch_mean' as a tensor of shape (3,)"),
    "text-log": (lambda loss, mean: (loss, {"batch_mean": "high"}), "logged 'batch_mean' as 'high'"),
}
ACCEPTED = {"mean": MeanPretext}
ACCEPTED.update({name: pretext_returning(name, returns) for name, (returns, _) in BROKEN.items()})
ACCEPTED["float-log"] = pretext_returning("float-log", lambda loss, mean: (loss, {"batch_mean": float(mean)}))


class ContractPlugin:
    @relpos.hookimpl
    def register_pretexts(self, register):
        for cls in ACCEPTED.values():
            register(cls)


@pytest.fixture
def contract_plugin():
    relpos.plugins.register_plugin(ContractPlugin(), "forward-contract")
    try:
        assert relpos.plugins.get_registry().failures == []
        yield
    finally:
        relpos.plugins.unregister_plugin("forward-contract")


@pytest.fixture
def images(make_image_folder) -> Path:
    return make_image_folder()


def train_args(pretext: str, out: Path, images: Path, steps: int = 2) -> list[str]:
    sets = [arg for value in SMALL for arg in ("--set", value)]
    return ["train", "--modality", "image", "--pretext", pretext, "--data", str(images), *sets,
            "--set", "train.log_every=1", "--steps", str(steps), "--no-progress", "--out", str(out)]


# -- forward's return value --------------------------------------------------------------------------------
def test_the_contract_sentence_is_the_documented_one():
    assert FORWARD_CONTRACT == (
        "forward must return (loss, logs): a scalar tensor and a dict of numbers (0-d tensors or floats) whose "
        "keys are in log_keys"
    )
    assert "returns `loss`, a scalar tensor to minimise" in (REPO / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("name", list(BROKEN), ids=list(BROKEN))
def test_a_forward_that_breaks_the_contract_is_refused_in_one_sentence_and_leaves_nothing(
    contract_plugin, name, images, tmp_path, capfd, one_thread
):
    out = tmp_path / "runs" / name
    assert main(train_args(name, out, images)) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("relpos: error:")]
    assert errors == [f"relpos: error: Pretext {name!r} {BROKEN[name][1]}, but {FORWARD_CONTRACT}."]
    assert not (tmp_path / "runs").exists()  # failed before the first checkpoint: nothing kept


def test_logs_as_0d_tensors_or_floats_reach_metrics_csv_as_numbers(contract_plugin, images, tmp_path, one_thread):
    rows = {}
    for name in ("mean", "float-log"):  # mean logs a 0-d tensor, float-log the same value as a float
        assert main(train_args(name, tmp_path / name, images)) == 0
        header, rows[name] = read_metrics(tmp_path / name)
        assert header[:2] == ["step", "loss"] and "batch_mean" in header
    # both runs see the same batches (same seed); the pixels are standardised, so the means are small
    for row, same in zip(rows["mean"], rows["float-log"]):
        assert float(row["batch_mean"]) == pytest.approx(float(same["batch_mean"]), abs=1e-6)
        assert abs(float(row["batch_mean"])) < 5
        assert float(row["loss"]) == pytest.approx(float(row["batch_mean"]) ** 2, rel=0.05, abs=1e-3)


def test_the_check_is_one_function_a_pretext_author_can_call():
    pretext = type("Stub", (), {"name": "mine", "log_keys": ("a",)})()
    loss = torch.ones((), requires_grad=True) * 2
    check_forward_output(pretext, (loss, {"a": torch.tensor(0.5)}))  # accepted: a 0-d tensor
    check_forward_output(pretext, (loss, {}))  # a key may be missing at some steps
    check_forward_output(pretext, (loss, {"a": np.float32(0.5)}))  # NumPy's scalars are numbers too
    with pytest.raises(PluginError, match=r"^Pretext 'mine' returned a tuple of 3 items from forward, but forward must"):
        check_forward_output(pretext, (1, 2, 3))
    with pytest.raises(PluginError, match=r"^Pretext 'mine' returned 0\.5 as the loss from forward"):
        check_forward_output(pretext, (0.5, {}))
    with pytest.raises(PluginError, match=r"logged 'b', 'c', not in its log_keys \('a'; add the keys there"):
        check_forward_output(pretext, (loss, {"b": 1.0, "c": 2.0}))
    with pytest.raises(PluginError, match=r"logged 'a' as True"):
        check_forward_output(pretext, (loss, {"a": True}))


# -- the building blocks docs/plugins.md names, with their exact signatures ---------------------------------
#: What a pretext author assembles a method from; each must be in the docs' table.
CORE_BLOCKS = (
    "relpos.Boxes", "relpos.grid_boxes", "relpos.sample_offgrid", "relpos.sample_pairs",
    "relpos.extract_patches", "relpos.relative_transform", "relpos.encoders.vit.masked_count",
    "relpos.encoders.vit.position_mask", "relpos.cache.cached_windows", "relpos.config.setting",
    "relpos.config.check_fields", "relpos.show.new_figure",
)


def documented_blocks() -> dict[str, str]:
    """``{dotted name: documented call}`` from the table under "### Building blocks"."""
    text = (REPO / "docs" / "plugins.md").read_text()
    section = text.split("### Building blocks", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(relpos\.[\w.]+)(\(.*?\))` \|", section, flags=re.M)
    return {name: f"{name}{args}" for name, args in rows}


def resolve(dotted: str):
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


def real_call(dotted: str) -> str:
    """``relpos.x(a, b=None)``: the object's signature without self, annotations or return type."""
    return _documented_form(dotted, resolve(dotted))  # as the hooks' and methods' documentation test


def test_every_core_building_block_is_in_the_docs_table():
    missing = [name for name in CORE_BLOCKS if name not in documented_blocks()]
    assert not missing, f"docs/plugins.md's building blocks table lacks {', '.join(missing)}"


@pytest.mark.parametrize("name", list(documented_blocks()))
def test_each_documented_building_block_has_its_exact_signature(name):
    assert documented_blocks()[name] == real_call(name)
