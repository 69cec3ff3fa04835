"""relpos's built-in modalities (image, eeg, timeseries), registered through the relpos entry points
exactly as a third-party package's would be.

Each is a package: :mod:`.image`, :mod:`.eeg`, :mod:`.timeseries`; what more than one of them uses
(finding files, the dead-channel policy, channel types, the normalisations, NumPy files, the
trial-archive layout) is in :mod:`.common`. ``data/`` holds the EEG recording the eeg modality
falls back on.
"""
