"""Which normalisation ``modality.normalize: auto`` (the default of eeg and timeseries) uses, and how it says so.

``auto`` keeps what labels depend on where the data allow it:

* **continuous recordings** (windows that know their time in a recording: an EDF/BDF/FIF...
  recording, a ``(channels, time)`` sensor recording cut into windows) are scaled per recording
  (``recording``): one robust centre and scale per channel, so that a window keeps its power relative
  to the rest of the recording (what sleep stages are scored on). On the sleep night, with a
  time-block split, random init probes at κ 0.771 with it against 0.701 with ``instance``;
* **trials** (an ``.npz`` of trials, a UEA set, several whole samples) keep per-window instance
  normalisation (``instance``), today's behaviour there: on the Blink trials a per-file scale took
  random init from κ 0.68 down to 0.22.

The explicit choices (``instance``, ``recording``, ``file``, and ``none`` for timeseries) are used
as given. The value used is stored with the windows (``info["normalize"]``, and the sentence in
``info["normalize_choice"]``), so a run's ``data_info`` records it and :func:`restored` opens new
data the way the run was trained.
"""

from __future__ import annotations

from dataclasses import replace

AUTO = "auto"
#: What auto becomes, by the kind of data.
FOR_CONTINUOUS = "recording"
FOR_TRIALS = "instance"


def resolve(normalize: str, continuous: bool, count: int = 1) -> tuple[str, str]:
    """(the normalisation used, the sentence to print at load; ``""`` when it was chosen explicitly).

    Parameters
    ----------
    normalize : str
        ``modality.normalize`` as set.
    continuous : bool
        Whether the windows are cut from continuous recordings (they know their time in one).
    count : int
        How many recordings or sources, for the sentence's grammar.
    """
    if normalize != AUTO:
        return normalize, ""
    if continuous:
        what = "a continuous recording" if count == 1 else f"{count} continuous recordings"
        return FOR_CONTINUOUS, (
            f"modality.normalize = auto: {FOR_CONTINUOUS} ({what}: each recording scaled by its own robust "
            f"statistics, keeping the windows' differences in power; set modality.normalize to choose)"
        )
    return FOR_TRIALS, (
        f"modality.normalize = auto: {FOR_TRIALS} (trials: each window scaled by its own mean and standard "
        f"deviation, keeping their shape only; set modality.normalize to choose)"
    )


def describe(info: dict) -> str | None:
    """The normalisation of loaded windows for ``relpos data inspect``: ``recording (auto: continuous
    recording)``, ``instance (auto: trials)``, or the explicit choice; None when ``info`` does not say."""
    used = info.get("normalize")
    if not used:
        return None
    if not info.get("normalize_choice"):  # chosen explicitly
        return str(used)
    return f"{used} (auto: {'continuous recording' if used == FOR_CONTINUOUS else 'trials'})"


def restored(config, data_info: dict):
    """``config`` with ``normalize: auto`` replaced by what the run's training data used (``data_info``).

    A run trained with ``auto`` opens new data the same way it was trained (``recording`` for a run
    trained on a recording, even on trials), not by what ``auto`` would choose for the new data. A
    config that names its normalisation (every run made before ``auto`` existed says ``instance``)
    keeps it.
    """
    used = data_info.get("normalize")
    if config.normalize != AUTO or used is None:
        return config
    restored_config = replace(config, normalize=used)
    restored_config.validate()  # a data_info naming no normalisation of this modality is refused by name
    return restored_config
