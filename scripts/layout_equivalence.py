"""Does a dataset give the same plan and the same cache however it is laid out?

Three views of one MSD dataset: the folder itself, a folder whose ``imagesTr/`` and ``labelsTr/``
are symlinks to it (as on clusters), and its nnU-Net v2 conversion (``c2fnas data convert``).
Each is preprocessed and planned without a budget (the paper's schedule, so no measured step
time enters the configuration) into its own run folder; the script compares ``plan.json``, the
planned configuration and every cached case's arrays, and exits 1 on any difference.

    .venv/bin/python scripts/layout_equivalence.py ../shared/data/Task04_Hippocampus
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from c2fnas.data.cache import load_arrays
from c2fnas.data.pipeline import cached_case_ids
from c2fnas.files.run_folder import RunFolder
from c2fnas.training.config import load_config

C2FNAS = [sys.executable, "-m", "c2fnas"]


def symlinked(dataset: Path, root: Path) -> Path:
    view = root / "symlinked"
    view.mkdir()
    for name in ("imagesTr", "labelsTr", "imagesTs"):
        if (dataset / name).is_dir():
            (view / name).symlink_to((dataset / name).resolve(), target_is_directory=True)
    (view / "dataset.json").write_bytes((dataset / "dataset.json").read_bytes())
    return view


def run(*arguments: str) -> None:
    subprocess.run([*C2FNAS, *arguments], check=True, stdout=subprocess.DEVNULL)


MEASURED = ("checkpoint_every",)
"""Planned from the step time measured on the machine at planning time, so it differs between
any two plans (about a checkpoint per ten minutes of training), whatever the layout."""


def fingerprint(run_dir: Path) -> dict[str, object]:
    """plan.json, the planned configuration (but ``MEASURED``) and a digest of every cached
    case's arrays."""
    folder = RunFolder(run_dir)
    cases = {}
    for case in cached_case_ids(run_dir):
        digest = hashlib.sha256()
        for name, array in sorted(load_arrays(run_dir, case).items()):
            digest.update(name.encode() + np.ascontiguousarray(array).tobytes())
        cases[case] = digest.hexdigest()
    config = load_config("paper", folder.plan_config).model_dump(mode="json")
    for name in MEASURED:
        del config["training"][name]
    return {"plan": json.loads(folder.plan.read_text()), "config": config, "cases": cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        views = {
            "msd": args.dataset,
            "symlinked": symlinked(args.dataset, root),
            "nnunet-v2": root / "Dataset004_Hippocampus",
        }
        run("data", "convert", str(args.dataset), str(views["nnunet-v2"]), "--to", "nnunet")
        prints = {}
        for name, view in views.items():
            run_dir = root / f"run-{name}"
            run("preprocess", str(view), "--run", str(run_dir))
            run("plan", str(view), "--run", str(run_dir), "--device", "cpu")
            prints[name] = fingerprint(run_dir)
            print(f"{name}: {len(prints[name]['cases'])} cases cached")
    reference = prints["msd"]
    same = True
    for name, found in prints.items():
        for part in ("plan", "config", "cases"):
            equal = found[part] == reference[part]
            same &= equal
            print(f"{name} vs msd, {part}: {'same' if equal else 'DIFFERENT'}")
            if not equal and part == "config":
                for section, values in found[part].items():
                    for key, value in values.items():
                        if reference[part][section][key] != value:
                            print(f"  {section}.{key}: {value} vs {reference[part][section][key]}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
