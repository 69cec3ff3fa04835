"""relpos built-in modality plugins (image, eeg), registered through the relpos entry points."""
