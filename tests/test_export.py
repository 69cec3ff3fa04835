"""`relpos export`: safetensors round trips exactly, timm reproduces relpos's features."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import relpos
from relpos.cli import main
from relpos.errors import RelposError
from relpos.api import read_metadata
from relpos.export import export

from conftest import train_tiny_part


@pytest.fixture(scope="module")
def eeg_run(tmp_path_factory):
    # One thread for speed, restored afterwards: a later test compares an in-process run with a
    # subprocess bit for bit, which holds only at the same number of threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny_part(tmp_path_factory.mktemp("export") / "eeg")
    finally:
        torch.set_num_threads(threads)


def _one_sentence_exit_2(args, capsys):
    capsys.readouterr()
    assert main(args) == 2
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("relpos: error: ") and "Traceback" not in err, err
    return lines[0]


def test_safetensors_round_trip_is_exact(eeg_run, tmp_path):
    path = tmp_path / "eeg.safetensors"
    assert main(["export", str(eeg_run), "--out", str(path)]) == 0
    original = relpos.load_encoder(eeg_run)
    exported = relpos.load_encoder(path)
    x = torch.randn(3, original.encoder.in_channels, 3000, generator=torch.Generator().manual_seed(0))
    for features in ("cls", "tokens"):
        assert torch.equal(original.embed(x, features), exported.embed(x, features))
    assert exported.modality.name == "eeg" and exported.modality.patch_size() == original.modality.patch_size()
    meta = read_metadata(path)
    assert meta["encoder"]["arch"] == "vit" and meta["encoder"]["args"]["in_channels"] == original.encoder.in_channels
    assert meta["modality"]["name"] == "eeg" and meta["modality"]["axes"] == ["time"]
    assert meta["sfreq"] == 100.0 and meta["patch"]["size"] == [100.0] and meta["patch"]["shape"] == [100]
    assert meta["relpos_version"] == relpos.__version__ and meta["config"]["pretext"]["name"] == "part"


def test_loading_never_unpickles(tmp_path):
    """A pickle renamed .safetensors is refused without running the code it names."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(RelposError, match="is not a safetensors file"):
        relpos.load_encoder(path)
    assert not marker.exists()


def test_safetensors_without_relpos_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(RelposError, match="without relpos's description"):
        relpos.load_encoder(path)


@pytest.mark.parametrize("pos_embed", ["none", "sincos"])
def test_timm_reproduces_features_on_mnist(shared_data, tmp_path, pos_embed, capsys):
    timm = pytest.importorskip("timm")
    mnist = shared_data / "images" / "mnist.npz"
    if not mnist.is_file():
        pytest.skip(f"{mnist} not found")
    extra = ["modality.max_images=16"]
    if pos_embed == "sincos":  # position-masked PART: sin-cos embeddings, which timm gets as its table
        extra += ["encoder.pos_embed=sincos", "encoder.pos_mask_ratio=0.25"]
    run = train_tiny_part(tmp_path / "mnist", modality="image", data=mnist, extra=extra)
    path = tmp_path / "timm.safetensors"
    capsys.readouterr()
    assert main(["export", str(run), "--format", "timm", "--out", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(path) and "patch_embed.proj.weight" in err and "model.norm.eps = 1e-05" in err
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = json.loads(fh.metadata()["timm"])
    model = timm.create_model(
        meta["model"], pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **meta["kwargs"]
    ).eval()
    model.norm.eps = meta["set_after_create"]["norm.eps"]
    encoder = relpos.load_encoder(run)
    images = encoder.open(mnist).x[:4]  # real digits, preprocessed as relpos does
    with torch.no_grad():
        timm_tokens = model.forward_features(images)
    relpos_tokens = encoder.embed(images, "tokens").reshape(4, -1, encoder.dim)
    torch.testing.assert_close(timm_tokens[:, 1:], relpos_tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(timm_tokens[:, 0], encoder.embed(images, "cls"), atol=1e-5, rtol=1e-5)


# -- bad input ------------------------------------------------------------------------------------
def test_folder_that_does_not_exist(eeg_run, tmp_path, capsys):
    target = tmp_path / "missing" / "enc.safetensors"
    line = _one_sentence_exit_2(["export", str(eeg_run), "--out", str(target)], capsys)
    assert "does not exist" in line and str(tmp_path / "missing") in line
    assert not (tmp_path / "missing").exists()


def test_existing_file_needs_force(eeg_run, tmp_path, capsys):
    target = tmp_path / "enc.safetensors"
    target.write_text("keep me")
    line = _one_sentence_exit_2(["export", str(eeg_run), "--out", str(target)], capsys)
    assert "already exists" in line and "--force" in line
    assert target.read_text() == "keep me"
    assert main(["export", str(eeg_run), "--out", str(target), "--force"]) == 0
    assert read_metadata(target)["modality"]["name"] == "eeg"


def test_out_must_be_a_safetensors_file(eeg_run, tmp_path, capsys):
    line = _one_sentence_exit_2(["export", str(eeg_run), "--out", str(tmp_path / "enc.pt")], capsys)
    assert "must end in .safetensors" in line and "'.pt'" in line
    line = _one_sentence_exit_2(["export", str(eeg_run), "--out", str(tmp_path)], capsys)
    assert "is a folder" in line
    assert list(tmp_path.iterdir()) == []


def test_timm_needs_a_2d_encoder(eeg_run, tmp_path, capsys):
    target = tmp_path / "t.safetensors"
    line = _one_sentence_exit_2(["export", str(eeg_run), "--format", "timm", "--out", str(target)], capsys)
    assert "2-D image ViT" in line and "1-D encoder" in line and "--format safetensors" in line
    assert not target.exists()


def test_unknown_format_and_missing_checkpoint(eeg_run, tmp_path, capsys):
    line = _one_sentence_exit_2(["export", str(eeg_run), "--format", "onnx", "--out", str(tmp_path / "x.safetensors")], capsys)
    assert "'onnx'" in line and "'safetensors', 'timm'" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_sentence_exit_2(["export", str(empty)], capsys)
    assert "has no checkpoint" in line
    assert not (empty / "export").exists()
