"""Writing a benchmark's results (the command-line options and the measurements, as JSON) and
reading them back: the saved options as the command-line flags that reproduce them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["append_row", "flags", "read_results", "repo_path", "runs_table", "write_results"]


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


def read_results(path: Path) -> dict | list[dict]:
    """What :func:`write_results` wrote (a dict), or the rows :func:`append_row` appended."""
    text = Path(path).read_text()
    if Path(path).suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def repo_path(path: str | Path) -> str:
    """``path`` relative to the repository (from its ``benchmarks`` folder on), wherever the
    repository was when the path was saved."""
    parts = Path(path).parts
    if "benchmarks" not in parts:
        return str(path)
    return str(Path(*parts[len(parts) - 1 - parts[::-1].index("benchmarks") :]))


def _same(value: object, default: object) -> bool:
    if isinstance(default, Path):
        return value is not None and repo_path(value) == repo_path(default)
    return value == default


def _flag(key: str, value: object, default: object) -> list[str]:
    name = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [name] if value else [f"--no-{key.replace('_', '-')}"]
    if isinstance(value, list):
        return [name, *map(str, value)]
    return [name, repo_path(value) if isinstance(default, Path) else str(value)]


def flags(parser: argparse.ArgumentParser, config: dict) -> list[str]:
    """The flags that make ``parser`` reproduce a saved ``config``: the options that differ from
    today's defaults, in the order they were saved. Options no flag sets (ones the parser no
    longer has, ``None`` where today's default is not) are left out, like options added since
    (old configs lack them): they take today's default. Raises ``ValueError`` if the flags do not
    parse back to the options kept, or do not parse."""
    defaults = vars(parser.parse_args([]))
    known = {k: v for k, v in config.items()
             if k in defaults and (v is not None or defaults[k] is None)}
    argv = [s for k, v in known.items() if not _same(v, defaults[k])
            for s in _flag(k, v, defaults[k])]
    try:
        parsed = vars(parser.parse_args(argv))
    except SystemExit as error:  # argparse has printed why
        raise ValueError(f"the flags {argv} do not parse (a flag named other than its "
                         "option?)") from error
    wrong = [k for k, v in known.items() if not _same(v, parsed[k])]
    if wrong:
        raise ValueError(f"the flags {argv} do not reproduce the saved options {wrong}")
    return argv


def _cell(value: object, spec: str) -> str:
    if value is None:
        return "—"
    return format(value, spec) if spec else str(value)


def runs_table(rows: list[dict], parser: argparse.ArgumentParser,
               columns: list[tuple[str, str, str]]) -> str:
    """A markdown table of ablation runs (the rows :func:`append_row` wrote): the ``columns``
    ``(header, key, format)``, then each run's flags (:func:`flags`, less ``--tag``), the row's
    other numbers and its notes, numbered below the table: the row's own ``note`` and the
    options the script gained after the run (not in its row, so its flags hold today's
    defaults for them)."""
    defaults = vars(parser.parse_args([]))
    shown = {"config", "note", *(k for _, k, _ in columns)}
    notes: list[str] = []
    lines = ["| " + " | ".join([h for h, _, _ in columns] + ["flags", "other", "notes"]) + " |",
             "|" + "---|" * (len(columns) + 3)]
    for row in rows:
        config, mine = row.get("config"), [row["note"]] if row.get("note") else []
        if config is None:
            argv = "—"
        else:
            argv = "`" + (" ".join(flags(parser, {k: v for k, v in config.items()
                                                  if k != "tag"})) or "(defaults)") + "`"
            missing = [f"--{k.replace('_', '-')}" for k in defaults
                       if k not in config and k not in ("out", "progress", "print")]
            if missing:
                mine.append(f"not recorded (the options came later): {', '.join(missing)}")
        notes += [n for n in mine if n not in notes]
        other = ", ".join(f"{k} {_cell(v, '.4g')}" for k, v in row.items()
                          if k not in shown and isinstance(v, (int, float)))
        cells = [_cell(row.get(k), s) for _, k, s in columns]
        numbers = ", ".join(str(notes.index(n) + 1) for n in mine)
        lines.append("| " + " | ".join([*cells, argv, other, numbers]) + " |")
    lines += ["", *(f"{i}. {n}" for i, n in enumerate(notes, 1))] if notes else []
    return "\n".join(lines)
