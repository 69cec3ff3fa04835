"""Axes carry a unit and a scale from native samples, and figures label their axes with them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import relpos
import relpos.plugins
from relpos.config import setting
from relpos.encoders.vit import EncoderConfig
from relpos.modality import Axis, Modality, Windows
from relpos.plugins import get_modality, get_pretext
from relpos.show import figure_axes

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class MillisecondConfig:
    patch_size: float = setting(8.0, gt=0, le=4096)  # native samples


class MillisecondSeries(Modality):
    """A third party's 2 kHz recordings: positions shown in milliseconds."""

    name = "ms-series"
    axes = (Axis("time", unit="ms", scale=0.5),)  # 0.5 ms per sample
    Config = MillisecondConfig

    def load(self, data):
        return Windows(x=torch.as_tensor(data, dtype=torch.float32))


class MillisecondPlugin:
    @relpos.hookimpl
    def register_modalities(self, register):
        register(MillisecondSeries)


@pytest.fixture
def ms_series():
    relpos.plugins.register_plugin(MillisecondPlugin(), "ms-series-plugin")
    yield get_modality("ms-series")
    relpos.plugins.unregister_plugin("ms-series-plugin")


def test_an_axis_is_its_name_with_a_unit_and_a_scale():
    axis = Axis("time", unit="ms", scale=0.5)
    assert axis == "time" and ", ".join((axis, "x")) == "time, x" and axis in ("time",)
    assert axis.label() == "time (ms)" and axis.label("patch centre") == "patch centre (ms)"
    assert axis.shown(10) == 5.0  # 10 samples of 0.5 ms
    assert Axis("depth").label() == "depth (samples)" and Axis("depth").scale == 1.0
    with pytest.raises(ValueError, match=r"Axis 'time' needs a unit .* and a positive, finite scale .*got unit='s' and scale=0"):
        Axis("time", unit="s", scale=0)


def test_a_plugin_modalitys_axis_in_ms_labels_the_part_figures(ms_series):
    modality = ms_series(ms_series.Config())
    (axis,) = figure_axes(modality)
    assert (axis.label(), axis.label("patch centre"), axis.scale) == ("time (ms)", "patch centre (ms)", 0.5)
    # the figure code path: PART's reconstruction and uncertainty of a 64-sample series (32 ms)
    windows = modality.load(torch.randn(2, 1, 64))
    pretext = get_pretext("part")(get_pretext("part").Config(), modality, EncoderConfig(dim=16, depth=1, heads=2),
                                  windows).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        figure, _ = pretext.draw_figure("reconstruction", windows.x, generator)
        spread, _ = pretext.draw_figure("uncertainty", windows.x, generator)
    assert {ax.get_xlabel() for ax in figure.axes} == {"time (ms)"}
    assert figure.axes[0].get_xlim() == pytest.approx((0.0, 32.0))
    assert [ax.get_xlabel() for ax in spread.axes[:2]] == ["time (ms)", "patch centre (ms)"]


def test_a_modality_declaring_plain_names_stays_in_samples():
    class Plain(Modality):
        name = "plain"
        axes = ("row", "col")

    assert [a.label() for a in figure_axes(Plain())] == ["row (samples)", "col (samples)"]


def test_the_builtin_modalities_units():
    eeg = get_modality("eeg")
    (time,) = figure_axes(eeg(eeg.Config(sfreq=100.0)))
    assert (time.label(), time.scale) == ("time (s)", 0.01)  # a 30-s window of 3000 samples ends at 30 s
    assert time.shown(3000) == pytest.approx(30.0)
    series = get_modality("timeseries")()
    assert figure_axes(series)[0].label() == "time (samples)"  # no rate known before data is loaded
    series.restore({"sfreq": 250.0})
    assert figure_axes(series)[0].label() == "time (s)" and figure_axes(series)[0].scale == pytest.approx(0.004)
    assert [a.label() for a in figure_axes(get_modality("image")())] == ["row (pixels)", "col (pixels)"]
