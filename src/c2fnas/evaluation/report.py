"""Writing evaluation results: a CSV per case and class, and a JSON summary."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from c2fnas.evaluation.metrics import CaseScore
from c2fnas.files.atomic import write_text_atomic


def write_csv(scores: Sequence[CaseScore], path: Path) -> Path:
    """Columns case, label, dice, hd95, surface_dice; an undefined HD95 is written as ``nan``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case", "label", "dice", "hd95", "surface_dice"])
    writer.writeheader()
    for score in scores:
        writer.writerow(asdict(score))
    return write_text_atomic(path, buffer.getvalue())


def _json_safe(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


def write_summary(summary: dict[str, object], path: Path) -> Path:
    """The summary as JSON; NaN (undefined) becomes ``null``."""
    return write_text_atomic(path, json.dumps(_json_safe(summary), indent=2) + "\n")
