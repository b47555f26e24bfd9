"""Datasets: MSD and nnU-Net v2 reading and checks, preprocessing and its inverse, the cache,
splits, patches.

Modules (see ``docs/design.md``, "Data API"):

- ``msd``: ``read_dataset`` parses ``dataset.json`` (MSD, or nnU-Net v2 through ``nnunet``);
  ``convert``: ``convert_dataset`` writes one layout as the other.
- ``check``: ``check_dataset`` finds every problem of a dataset folder, case by case.
- ``preprocess``: ``Plan``, ``preprocess_arrays``; ``geometry``: ``CaseGeometry`` and its
  ``restore`` (the inverse, for label maps and probabilities).
- ``fingerprint`` and ``pipeline``: ``preprocess_dataset`` caches a dataset into a run folder.
- ``cache``: ``load_case``; ``io``: image reading (NIfTI; ITK formats through ``itk``) and
  ``write_like``.
- ``splits``: ``load_or_create``; ``loader``: ``train_batches``, ``validation_cases``;
  ``augment``: the nnU-Net-like rotation, scaling and intensity transforms of a patch.
- ``synth``: ``make_synthetic_dataset``.
"""
