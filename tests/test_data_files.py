"""What real files hold (issue 9, section 4): deep images, files that are not what their name says,
and truncated EDFs. Every file is written by the test; expected values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import relpos
from relpos.cli import main
from relpos.config import build_dataclass
from relpos.errors import DataError


def modality(name, **options):
    cls = relpos.get_modality(name)
    if name == "eeg":
        options.setdefault("cache", False)
    return cls(build_dataclass(cls.Config, options, "modality"))


def pixels(windows) -> torch.Tensor:
    """Windows scaled back from [-1, 1] to [0, 1]."""
    return (windows.x.double() + 1) / 2


# -- 16-bit and other deep greyscale images ----------------------------------------------------------
@pytest.mark.parametrize("top", [65535, 4095, 300])
def test_a_16_bit_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path, top):
    from PIL import Image

    # Left half black, right half at `top`; 16 x 16 px read at image_size 16 (no resizing).
    values = np.zeros((16, 16), dtype=np.uint16)
    values[:, 8:] = top
    Image.fromarray(values).save(tmp_path / "deep.png")
    windows = modality("image", image_size=16).load(tmp_path / "deep.png")
    x = pixels(windows)[0, 0]
    assert x.shape == (16, 16)
    assert torch.allclose(x[:, :8], torch.zeros(16, 8, dtype=torch.float64), atol=1e-6)
    # 16-bit PNG: value / 65535 (convert("L") clipped every value above 255 to white).
    assert torch.allclose(x[:, 8:], torch.full((16, 8), top / 65535, dtype=torch.float64), atol=1e-6)


def test_16_bit_arrays_and_8_bit_pixels_in_wider_integers_are_scaled_too(tmp_path):
    deep = np.full((2, 8, 8), 32768, dtype=np.uint16)
    np.savez(tmp_path / "deep.npz", x=deep)
    x = pixels(modality("image", image_size=8).load(tmp_path / "deep.npz"))
    assert torch.allclose(x, torch.full_like(x, 32768 / 65535), atol=1e-6)
    wide = np.full((2, 8, 8), 51, dtype=np.int64)  # 8-bit pixels saved as int64
    np.savez(tmp_path / "wide.npz", x=wide)
    x = pixels(modality("image", image_size=8).load(tmp_path / "wide.npz"))
    assert torch.allclose(x, torch.full_like(x, 51 / 255), atol=1e-6)


# -- files that are not NumPy archives ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["image", "eeg"])
@pytest.mark.parametrize("filename", ["random.npz", "random.npy"])
def test_random_bytes_named_npz_or_npy_are_not_a_numpy_archive(tmp_path, capsys, name, filename):
    path = tmp_path / filename
    path.write_bytes(bytes([7, 1, 200, 3]) + np.random.default_rng(5).bytes(2000))
    with pytest.raises(DataError) as info:
        modality(name).load(path)
    message = str(info.value)
    assert message.startswith(f"{str(path)!r} is not a NumPy archive:")
    assert "b'\\x07\\x01\\xc8\\x03" in message and "allow_pickle" not in message
    code = main(["train", "--modality", name, "--data", str(path), "--steps", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "is not a NumPy archive" in err
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_an_archive_of_python_objects_is_refused_without_unpickling_advice(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match=r"holds Python objects \(a pickled object array\), which relpos does not load"):
        modality("image").load(path)


# -- truncated EDF ----------------------------------------------------------------------------------
def _edf(tmp_path, seconds=40):
    edfio = pytest.importorskip("edfio")
    rng = np.random.default_rng(0)
    signals = [
        edfio.EdfSignal(rng.standard_normal(seconds * 100) * 20, sampling_frequency=100, label=f"EEG {c}",
                        physical_dimension="uV", physical_range=(-500, 500))
        for c in ("C3", "C4")
    ]
    path = tmp_path / "night.edf"
    edfio.Edf(signals).write(path)
    return path


def test_an_edf_cut_inside_its_header_says_it_is_truncated(tmp_path, capsys):
    path = _edf(tmp_path)
    # 2 signals: a 256 + 2 * 256 = 768-byte header; cut at 500 bytes, inside the signal headers.
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError) as info:
        modality("eeg").load(path)
    assert str(info.value) == (
        f"Recording {str(path)!r} is truncated: it has 500 bytes, fewer than the 768-byte header it "
        f"declares, so its header is incomplete."
    )
    code = main(["data", "inspect", str(path), "--set", "cache=false"])
    err = capsys.readouterr().err
    assert code == 2 and "is truncated: it has 500 bytes" in err and "could not convert" not in err


def test_an_edf_cut_inside_its_data_is_read_up_to_the_cut_with_the_sizes(tmp_path, capsys):
    path = _edf(tmp_path, seconds=70)
    data = path.read_bytes()
    # 1-s records of 2 x 100 samples x 2 bytes = 400 bytes; 768 + 70 * 400 = 28,768 bytes declared.
    assert len(data) == 28768
    path.write_bytes(data[: 768 + 45 * 400 + 123])  # 45 whole records and part of the 46th
    windows = modality("eeg", stride_s=5).load(path)
    # 45 s read: 30-s windows at 0, 5, 10, 15 s.
    assert len(windows) == 4
    err = capsys.readouterr().err
    assert (
        f"Recording {str(path)!r} is truncated: its header declares 28,768 bytes (a 768-byte header and 70 "
        f"data records of 400 bytes) but the file has 18,891 bytes; reading the 45.0 s it holds." in err
    )
