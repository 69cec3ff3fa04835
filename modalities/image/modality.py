"""The ``image`` modality: 2 axes (row, col), pixels as native units.

Opens a folder of images (searched recursively; any size; RGB, greyscale (8 or 16 bits), RGBA or
palette) or a NumPy ``.npz``/``.npy`` holding an image array. Pixel values are scaled by their bit
depth (uint8 by 255, uint16 and 16-bit PNGs by 65535); floats must be in [0, 1], and an array that
holds no pixels (standardised signals, an archive with a sampling rate) is refused, never clipped. Images are resized so the shorter side is ``image_size`` and
centre-cropped to a square, scaled to [-1, 1]. In a folder whose images sit in sub-folders, the
sub-folder names become class labels (the ImageFolder layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from relpos.config import check_fields, setting
from relpos.errors import ConfigError, DataError
from relpos.modality import Axis, Modality, Windows, npz_keys

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
NPZ_IMAGE_KEYS = ("x_train", "x", "images", "X_train", "X", "arr_0")
NPZ_LABEL_KEYS = {
    "x_train": "y_train", "X_train": "y_train", "x_test": "y_test", "X_test": "y_test",
    "x": "y", "X": "y", "images": "labels",
}


@dataclass
class ImageConfig:
    """Options of the image modality."""

    # side of the square every image is resized and centre-cropped to; 16384 px is what a batch of
    # float images can still hold (3 x 16384² floats = 3 GiB per image)
    image_size: int = setting(32, ge=1, le=16384)
    patch_size: int = setting(4, ge=1, le=16384)  # patch side in pixels (also the patch resolution)
    # auto (grey if every image is grey, else RGB) | rgb | grey
    color: str = setting("auto", choices=("auto", "rgb", "grey"))
    hflip: bool = setting(True)  # random horizontal flips while pretraining
    # array to read from an .npz (default: x_train, x, images, ...)
    npz_key: str = setting("", free="an array name")
    max_images: int = setting(0, ge=0)  # read at most this many images (0 = all)

    def validate(self) -> None:
        check_fields(self, "modality")  # each value against its declared range (a config made in Python)
        if self.image_size < self.patch_size:
            raise ConfigError(
                f"'modality.image_size' ({self.image_size}) must be at least the patch size "
                f"({self.patch_size})."
            )


def _resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` so the shorter side is ``size``, then centre-crop to ``size²``."""
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size]
    return x


#: Memory one resizing step may use for its intermediate (uncropped) images.
RESIZE_CHUNK_BYTES = 256 * 2**20


def available_memory_bytes() -> int | None:
    """Memory this process can still take without swapping (Linux ``MemAvailable``), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def _resize_plan(n: int, channels: int, size: int) -> str:
    return f"{n} image{'s' if n != 1 else ''} of {channels} channel{'s' if channels != 1 else ''} to {size}×{size} px"


def _check_fits(n: int, channels: int, size: int, what: str) -> None:
    """Refuse, before allocating, windows that cannot fit in memory.

    The windows take ``n · channels · size² · 4`` bytes (scaled to [-1, 1] in place), plus one
    chunk of intermediate images; an allocation past the machine's memory fails with the
    allocator's raw error, or (Linux over-committing memory) gets the process killed without a word
    while the pages are filled.
    """
    needed = n * channels * size * size * 4 + RESIZE_CHUNK_BYTES
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise DataError(
            f"Resizing {what} (modality.image_size={size}) needs about {_gib(needed)} of memory, but "
            f"{_gib(available)} is available; lower modality.image_size or read fewer images with "
            f"modality.max_images."
        )


def _out_of_memory(exc: BaseException, n: int, channels: int, size: int, what: str) -> DataError | None:
    """The out-of-memory sentence for an allocator failure while loading, or None for another error."""
    if not (isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "allocate" in str(exc))):
        return None
    return DataError(
        f"Out of memory while resizing {what} (modality.image_size={size}, about "
        f"{_gib(n * channels * size * size * 4)} of windows); lower modality.image_size or read fewer "
        f"images with modality.max_images."
    )


def _resize_into(images, n: int, channels: int, size: int, what: str) -> torch.Tensor:
    """Resize ``images`` (an iterable of ``(k, channels, H, W)`` tensors, ``n`` images in all) into
    one preallocated ``(n, channels, size, size)`` tensor, a chunk at a time, so the peak memory
    is the windows plus one chunk's intermediate images rather than twice the windows."""
    _check_fits(n, channels, size, what)
    try:
        out = torch.empty((n, channels, size, size), dtype=torch.float32)
        start = 0
        for batch in images:
            h, w = batch.shape[-2:]
            scale = size / min(h, w)
            per_image = channels * max(size, round(h * scale)) * max(size, round(w * scale)) * 4
            step = max(1, RESIZE_CHUNK_BYTES // max(per_image, 1))
            for chunk in batch.split(step):
                out[start : start + len(chunk)] = _resize_square(chunk, size)
                start += len(chunk)
    except (MemoryError, RuntimeError) as exc:
        error = _out_of_memory(exc, n, channels, size, what)
        if error is None:
            raise
        raise error from None
    return out


def _deep_grey(img, path: Path) -> np.ndarray:
    """A 16-bit or 32-bit greyscale image (PIL modes ``I;16*``, ``I``, ``F``) as float32 in [0, 1].

    Integers are divided by the largest value of the file's bit depth: 65535 for 16-bit files (every
    16-bit PNG, which Pillow opens as ``I;16`` or ``I``), 2³¹ - 1 for a 32-bit integer image whose
    values go past 16 bits. Floating-point images are taken to be in [0, 1] already.
    """
    values = np.asarray(img)
    if img.mode == "F":
        return values.astype(np.float32)
    values = values.astype(np.float64)
    if values.size and values.min() < 0:
        raise DataError(
            f"Image {str(path)!r} holds negative pixel values (minimum {values.min():g}) in mode "
            f"{img.mode!r}; relpos reads unsigned greyscale images (8 or 16 bits)."
        )
    sixteen_bits = img.mode.startswith("I;16") or img.format == "PNG" or not values.size or values.max() <= 65535
    return (values / (65535.0 if sixteen_bits else 2147483647.0)).astype(np.float32)


#: Float pixels may overshoot [0, 1] by this much (resampling, rounding) before they count as out of range.
FLOAT_RANGE_SLACK = 1e-3


def _unit_range(images: np.ndarray, source: str) -> np.ndarray:
    """Pixel values scaled to [0, 1] by their type; float32 out.

    Unsigned integers are divided by their bit depth's largest value (uint8 by 255, uint16 by
    65535); signed integers holding 8-bit or 16-bit pixel values likewise; floats must already be
    in [0, 1]. Anything else (negative values, floats past 1: standardised signals, not pixels) is
    refused in one sentence instead of being clipped.
    """
    if images.dtype == np.bool_:
        return np.ascontiguousarray(images, dtype=np.float32)
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise DataError(
            f"Image array {source!r} has dtype {images.dtype}; expected unsigned integers (uint8, uint16) "
            f"or floats in [0, 1]."
        )
    low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if np.issubdtype(images.dtype, np.unsignedinteger):
        top = float(np.iinfo(images.dtype).max)
    elif np.issubdtype(images.dtype, np.signedinteger) and low >= 0 and high <= 65535:
        top = 255.0 if high <= 255 else 65535.0  # 8-bit or 16-bit pixels stored in a wider integer
    elif np.issubdtype(images.dtype, np.floating) and np.isfinite([low, high]).all() and (
        -FLOAT_RANGE_SLACK <= low and high <= 1 + FLOAT_RANGE_SLACK
    ):
        return np.ascontiguousarray(images, dtype=np.float32)
    else:
        raise DataError(
            f"Image array {source!r} holds {images.dtype} values from {low:g} to {high:g}, which are not "
            f"pixels: relpos reads images as unsigned 8- or 16-bit integers or floats in [0, 1] (is it "
            f"signal data for the timeseries or eeg modality?)."
        )
    return (np.ascontiguousarray(images, dtype=np.float64) / top).astype(np.float32)


class ImageModality(Modality):
    """Images from a folder or an .npz array; patches are square boxes in pixels."""

    name = "image"
    axes = (Axis("row", unit="pixels"), Axis("col", unit="pixels"))
    Config = ImageConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.config.validate()

    def load(self, data) -> Windows:
        if isinstance(data, np.ndarray):
            return self._from_array(data, None, [], "array")
        path = Path(data)
        if not path.exists():
            raise DataError(f"Data path {str(path)!r} does not exist.")
        if path.is_dir():
            return self._from_folder(path)
        if path.suffix.lower() in (".npz", ".npy"):
            return self._from_npz(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return self._from_files([path], path.parent, labels=None, class_names=[])
        raise DataError(
            f"Cannot open {str(path)!r} as images: expected a folder of images, an image file "
            f"({', '.join(IMAGE_SUFFIXES)}) or an .npz array."
        )

    def eval_splits(self, data) -> tuple[Windows, Windows] | None:
        """The images of an ``.npz`` with ``x_train`` and ``x_test`` (labels ``y_train``/``y_test``)."""
        keys = set(npz_keys(data))
        pairs = [("x_train", "x_test"), ("X_train", "X_test")]
        found = next((p for p in pairs if set(p) <= keys), None)
        if found is None or self.config.npz_key not in ("", found[0]):
            return None
        return self.load_with(data, npz_key=found[0]), self.load_with(data, npz_key=found[1])

    # -- sources -------------------------------------------------------------------------------
    def _from_folder(self, root: Path) -> Windows:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(
                f"No images found in folder {str(root)!r} (looked recursively for "
                f"{', '.join(IMAGE_SUFFIXES)})."
            )
        if self.config.max_images:
            files = files[: self.config.max_images]
        parents = {f.parent for f in files}
        labels, class_names = None, []
        if all(p != root and p.parent == root for p in parents) and len(parents) > 1:
            class_names = sorted(p.name for p in parents)
            index = {c: i for i, c in enumerate(class_names)}
            labels = torch.tensor([index[f.parent.name] for f in files], dtype=torch.long)
        return self._from_files(files, root, labels, class_names)

    def _from_files(self, files, root, labels, class_names) -> Windows:
        from PIL import Image, UnidentifiedImageError

        arrays, grey = [], []
        patch = self.config.patch_size
        for f in files:
            try:
                with Image.open(f) as img:
                    img.load()
                    mode = img.mode
                    is_grey = mode in ("L", "LA", "1", "I", "F") or mode.startswith("I;16")
                    if mode in ("I", "F") or mode.startswith("I;16"):
                        rgb = _deep_grey(img, f)  # 16-bit / 32-bit grey: convert("L") would clip at 255
                    else:
                        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
                            base = Image.new("RGBA", img.size, (255, 255, 255, 255))
                            img = Image.alpha_composite(base, img.convert("RGBA"))
                        rgb = np.asarray(img.convert("L" if is_grey else "RGB"), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"Cannot read image {str(f)!r}: {' '.join(str(exc).split())}.") from None
            h, w = rgb.shape[:2]
            if min(h, w) < patch:
                raise DataError(
                    f"Image {str(f)!r} is {w}×{h} px, smaller than the patch size {patch} px; "
                    f"remove it or lower modality.patch_size."
                )
            arrays.append(rgb)
            grey.append(is_grey)
        want_grey = self._want_grey(all(grey))

        def channel_first():
            for arr in arrays:
                t = torch.from_numpy(arr)
                t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
                t = t[:1] if want_grey and t.shape[0] == 1 else (t.mean(0, keepdim=True) if want_grey else t)
                if not want_grey and t.shape[0] == 1:
                    t = t.expand(3, -1, -1)
                yield t.unsqueeze(0)

        size, channels = self.config.image_size, 1 if want_grey else 3
        x = _resize_into(channel_first(), len(arrays), channels, size,
                         _resize_plan(len(arrays), channels, size) + f" from {str(root)!r}")
        groups = np.array([str(f.relative_to(root)) for f in files])
        return self._windows(x, labels, groups, class_names, source=str(root))

    def _from_npz(self, path: Path) -> Windows:
        from ..common.numpy_files import open_numpy, read_array

        archive = open_numpy(path)
        if isinstance(archive, np.ndarray):  # an .npy file: one image array
            return self._from_array(archive, None, [], str(path))
        with archive:
            keys = list(archive.keys())
            signal_keys = [k for k in ("sfreq", "ch_names", "ch_types") if k in keys]
            if signal_keys and not self.config.npz_key:
                # Sampling rates and channel names belong to signals (the UEA layout X_train (n, C, T)).
                raise DataError(
                    f"{str(path)!r} holds signal data, not images (it has {', '.join(map(repr, signal_keys))}); "
                    f"open it with the timeseries or eeg modality, or set modality.npz_key to read an array "
                    f"as images anyway."
                )
            key = self.config.npz_key or next((k for k in NPZ_IMAGE_KEYS if k in keys), "")
            if not key or key not in keys:
                raise DataError(
                    f"No image array in {str(path)!r}: found arrays {keys}; set modality.npz_key to one of them."
                )
            images = read_array(archive, key, path)
            label_key = NPZ_LABEL_KEYS.get(key)
            labels = read_array(archive, label_key, path) if label_key in keys else None
            class_names = [str(c) for c in read_array(archive, "class_names", path)] if "class_names" in keys else []
        return self._from_array(images, labels, class_names, f"{path}:{key}")

    def _from_array(self, images: np.ndarray, labels, class_names, source: str) -> Windows:
        if images.ndim == 3:
            images = images[:, None]
        elif images.ndim == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
            images = images.transpose(0, 3, 1, 2)
        if images.ndim != 4 or images.shape[1] not in (1, 3, 4) or len(images) == 0:
            raise DataError(
                f"Image array {source!r} has shape {list(images.shape)}; expected (N, H, W), "
                f"(N, H, W, C) or (N, C, H, W) with C in 1, 3, 4 and N >= 1."
            )
        if self.config.max_images:
            images = images[: self.config.max_images]
            labels = labels[: self.config.max_images] if labels is not None else None
        h, w = images.shape[2:]
        if min(h, w) < self.config.patch_size:
            raise DataError(
                f"Images in {source!r} are {w}×{h} px, smaller than the patch size "
                f"{self.config.patch_size} px; lower modality.patch_size."
            )
        x = torch.from_numpy(_unit_range(images, source))
        if x.shape[1] == 4:
            x = x[:, :3] * x[:, 3:] + (1 - x[:, 3:])  # composite over white
        want_grey = self._want_grey(x.shape[1] == 1)
        if want_grey and x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        elif not want_grey and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.config.image_size
        x = _resize_into([x], len(x), int(x.shape[1]), size,
                         _resize_plan(len(x), int(x.shape[1]), size) + f" from {source!r}")
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long) if labels is not None else None
        groups = np.array([str(i) for i in range(len(x))])
        return self._windows(x, y, groups, class_names, source=source)

    def _want_grey(self, all_grey: bool) -> bool:
        return self.config.color == "grey" or (self.config.color == "auto" and all_grey)

    def _windows(self, x, labels, groups, class_names, source) -> Windows:
        x = x.clamp_(0, 1).sub_(0.5).div_(0.5)  # in place: x is the freshly resized copy (_resize_into)
        # An image is one recording of one window: onset 0, one window long.
        info = {
            "source": source, "image_size": self.config.image_size, "channels": int(x.shape[1]), "time_unit": "window",
        }
        return Windows(x=x.contiguous(), labels=labels, groups=groups, class_names=class_names, info=info,
                       onsets=np.zeros(len(x)), durations=np.ones(len(x)))

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.config.hflip:
            return x
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    resample_views = True  # crops are resized to a fixed resolution, as DINO's multi-crop does

    @property
    def flip_axes(self) -> tuple[str, ...]:
        """Views may be mirrored left-right, unless ``modality.hflip`` is off."""
        return ("col",) if self.config.hflip else ()

    def photometric(self, patches, generator, view="global-1", per_patch=False):
        """DINO's colour recipe per view, or PW-Self's per patch (see :mod:`.photometric`)."""
        from .photometric import photometric_images

        return photometric_images(patches, generator, view, per_patch, self.config.image_size)
