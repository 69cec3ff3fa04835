"""What the built-in modalities share: finding data files (:mod:`.sources`), the dead-channel policy
(:mod:`.channels`) and channel types read from names (:mod:`.channel_types`), the normalisations
(:mod:`.normalisation`) and which one ``normalize: auto`` uses (:mod:`.normalisation_choice`), opening NumPy files without unpickling (:mod:`.numpy_files`), and the
amplitude augmentation of 1-D signals (:mod:`.series_photometric`)."""
