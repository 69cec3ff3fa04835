"""Sizes an EDF or BDF header declares, read without MNE, to tell a truncated file from a corrupt one.

An EDF file is a 256-byte fixed header, 256 bytes more per signal, then ``n_records`` data records
of ``sum(samples per record of each signal)`` samples, 2 bytes each (3 in BDF). A file cut short
makes MNE fail with whatever its parser meets first ("could not convert string to float" when the
cut falls inside the header); comparing the size the header declares with the file's size says what
really happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FIXED_HEADER_BYTES = 256
SIGNAL_HEADER_BYTES = 256
#: Offset of the "samples per data record" fields in the signal headers, per signal: label 16,
#: transducer 80, physical dimension 8, physical min/max 8 + 8, digital min/max 8 + 8, prefiltering 80.
_SAMPLES_FIELD_OFFSET = 16 + 80 + 8 + 8 + 8 + 8 + 8 + 80


@dataclass
class DeclaredSize:
    """What an EDF/BDF header says about the file's size."""

    header_bytes: int  # 256 * (signals + 1)
    n_records: int  # -1: unknown (the file was still being recorded)
    record_bytes: int  # bytes per data record, all signals
    file_bytes: int  # the file's actual size

    @property
    def total_bytes(self) -> int | None:
        """The size the header declares, or None when it does not say how many records there are."""
        return None if self.n_records < 0 else self.header_bytes + self.n_records * self.record_bytes


def _number(field: bytes) -> float | None:
    try:
        return float(field.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def declared_size(path: str | Path) -> DeclaredSize | None:
    """The sizes ``path``'s EDF/BDF header declares, or None when it is not an EDF/BDF header.

    A header cut short still gives what it holds: ``header_bytes`` from its fixed part, and
    ``record_bytes`` 0 when the signal headers are missing.
    """
    path = Path(path)
    file_bytes = path.stat().st_size
    with open(path, "rb") as fh:
        fixed = fh.read(FIXED_HEADER_BYTES)
        if len(fixed) < FIXED_HEADER_BYTES:
            if fixed[:1] == b"0" or fixed[:1] == b"\xff":  # EDF's "0       ", BDF's "\xffBIOSEMI"
                return DeclaredSize(FIXED_HEADER_BYTES, -1, 0, file_bytes)
            return None
        bytes_per_sample = 3 if fixed[:1] == b"\xff" else 2
        n_signals = _number(fixed[252:256])
        n_records = _number(fixed[236:244])
        if fixed[:1] not in (b"0", b"\xff") or n_signals is None or n_records is None or n_signals < 0:
            return None
        n_signals = int(n_signals)
        header_bytes = FIXED_HEADER_BYTES + SIGNAL_HEADER_BYTES * n_signals
        signal_headers = fh.read(SIGNAL_HEADER_BYTES * n_signals)
    if len(signal_headers) < SIGNAL_HEADER_BYTES * n_signals:
        return DeclaredSize(header_bytes, int(n_records), 0, file_bytes)
    start = _SAMPLES_FIELD_OFFSET * n_signals
    samples = [_number(signal_headers[start + 8 * i : start + 8 * (i + 1)]) for i in range(n_signals)]
    if any(s is None or s < 0 for s in samples):
        return None
    record_bytes = int(sum(samples)) * bytes_per_sample
    return DeclaredSize(header_bytes, int(n_records), record_bytes, file_bytes)


def truncation(path: str | Path) -> tuple[str, bool] | None:
    """Why ``path`` looks truncated, and whether its header itself is cut, or None when it is not.

    Returns
    -------
    (str, bool) or None
        A clause such as ``"is truncated: its header declares 48,338,048 bytes (a 2,048-byte header and
        2,650 data records of 18,240 bytes) but the file has 1,000,000 bytes"``, and True when the
        cut falls inside the header (nothing can be read), False when only data records are missing
        (the records before the cut can be).
    """
    size = declared_size(path)
    if size is None:
        return None
    if size.file_bytes < size.header_bytes:
        return (
            f"is truncated: it has {size.file_bytes:,} bytes, fewer than the {size.header_bytes:,}-byte "
            f"header it declares, so its header is incomplete",
            True,
        )
    total = size.total_bytes
    if total is None or size.record_bytes == 0 or size.file_bytes >= total:
        return None
    return (
        f"is truncated: its header declares {total:,} bytes (a {size.header_bytes:,}-byte header and "
        f"{size.n_records:,} data records of {size.record_bytes:,} bytes) but the file has "
        f"{size.file_bytes:,} bytes",
        False,
    )
