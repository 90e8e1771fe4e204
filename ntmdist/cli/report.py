"""What the commands print and write: the metrics table and strict JSON.

Example:
    >>> print(table([{"label": "NTM", "nll": 3.51234, "energy_distance": float("nan")}]))
    model  NLL <= (nats)    energy dist     on support        train s   sample s/10k
    NTM            3.512            nan              -              -              -
    >>> finite({"nll": float("inf"), "rows": [1.0]})
    {'nll': None, 'rows': [1.0]}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["finite", "table", "write_json"]

COLUMNS = [("NLL <= (nats)", "nll"), ("energy dist", "energy_distance"),
           ("on support", "on_support"), ("train s", "train_seconds"),
           ("sample s/10k", "sample_seconds_per_10k")]


def finite(obj: Any) -> Any:
    """``obj`` with non-finite floats (in dicts, at any depth) as ``None``: strict JSON."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: dict) -> None:
    """Write ``finite(obj)`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(obj), indent=2) + "\n")


def _cell(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) else "-"


def table(rows: list[dict[str, Any]]) -> str:
    """The metrics of ``rows`` (each with a ``label``) as a fixed-width text table."""
    width = max(len(row["label"]) for row in rows) + 2
    lines = ["model".ljust(width) + "".join(h.rjust(15) for h, _ in COLUMNS)]
    for row in rows:
        cells = "".join(_cell(row.get(k)).rjust(15) for _, k in COLUMNS)
        lines.append(row["label"].ljust(width) + cells)
    return "\n".join(lines)
