"""Configuration presets as YAML: ``paper``, ``cpu`` and ``smoke`` (``c2fnas.training.config``)."""
