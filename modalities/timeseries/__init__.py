"""The ``timeseries`` modality: custom multichannel sensor data (xarray, netCDF, zarr, NumPy) cut into
normalised windows.

Modules: :mod:`.modality` (the options and the Modality class), :mod:`.sources` (finding files, the
``Source`` every reader gives), :mod:`.readers` with :mod:`.numpy_arrays` and :mod:`.xarray_files`
(one reader per format family), :mod:`.labels`, :mod:`.windows` (window length and stride) and
:mod:`.pipeline` (sources to windows). The pluggy hook that registers it is here.
"""

from __future__ import annotations

from relpos import hookimpl

from .modality import TimeseriesConfig, TimeseriesModality

__all__ = ["TimeseriesConfig", "TimeseriesModality"]


@hookimpl
def register_modalities(register):
    register(TimeseriesModality)
