"""Writing evaluation results: a CSV per case and class, and a JSON summary."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from c2fnas.evaluation.metrics import CaseScore


def _atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def write_csv(scores: Sequence[CaseScore], path: Path) -> Path:
    """Columns case, label, dice, hd95, surface_dice; an undefined HD95 is written as ``nan``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case", "label", "dice", "hd95", "surface_dice"])
    writer.writeheader()
    for score in scores:
        writer.writerow(asdict(score))
    return _atomic(path, buffer.getvalue())


def _json_safe(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


def write_summary(summary: dict[str, object], path: Path) -> Path:
    """The summary as JSON; NaN (undefined) becomes ``null``."""
    return _atomic(path, json.dumps(_json_safe(summary), indent=2) + "\n")
