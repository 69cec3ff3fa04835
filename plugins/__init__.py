"""relpos built-in pretext plugins (PART, PART-grid), registered through the relpos entry points."""
