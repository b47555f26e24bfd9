"""Datasets: MSD reading and checks, preprocessing and its inverse, the cache, splits, patches.

Modules (see ``docs/design.md``, "Data API"):

- ``msd``: ``read_dataset`` parses ``dataset.json``.
- ``check``: ``check_dataset`` finds every problem of a dataset folder, case by case.
- ``preprocess``: ``Plan``, ``preprocess_images``, ``restore_prediction``.
- ``fingerprint`` and ``pipeline``: ``preprocess_dataset`` caches a dataset into a run folder.
- ``cache``: ``load_case``; ``io``: NIfTI reading and ``write_like``.
- ``splits``: ``load_or_create``; ``loader``: ``train_batches``, ``validation_cases``.
- ``synth``: ``make_synthetic_dataset``.
"""
