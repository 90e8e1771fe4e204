"""Writing a benchmark's results: the command-line options and the measurements, as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["append_row", "write_results"]


def write_results(args: argparse.Namespace, **payload: object) -> None:
    """Write ``{"config": vars(args), **payload}`` to ``args.out`` (paths as strings)."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"config": config, **payload}, indent=2))
    print(f"wrote {args.out}")


def append_row(args: argparse.Namespace, row: dict) -> dict:
    """Append ``{**row, "config": options}`` as one JSON line to ``args.out`` (an ablation run;
    the options without ``out`` and ``progress``) and return it."""
    config = {k: v for k, v in vars(args).items() if k not in ("out", "progress")}
    row = {**row, "config": config}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row
