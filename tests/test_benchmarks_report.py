"""``docs/benchmarks.md`` is what ``benchmarks/report.py`` generates from the saved results, and
the commands it prints are the flags that reproduce each saved configuration."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from _scripts import ROOT, load_script, subprocess_env

results = load_script(ROOT / "benchmarks" / "_results.py", "benchmark_results")


def test_docs_benchmarks_page_is_current():
    # a subprocess: the benchmark scripts import zuko, which changes torch's global state
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py")], cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert done.stdout == page, (
        "docs/benchmarks.md is out of date: python benchmarks/report.py --out docs/benchmarks.md")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--toys", nargs="+", default=None)
    p.add_argument("--dims", type=int, nargs="*", default=[2, 64])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--paper", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--particles", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("/somewhere/benchmarks/results/x.json"))
    return p


def test_flags_reproduce_the_options_that_differ_from_the_defaults():
    config = {"steps": 300, "lr": 0.002, "toys": ["rings"], "dims": [], "quick": True,
              "paper": False, "compile": True, "particles": None, "gone": 7,
              "out": "/elsewhere/benchmarks/results/x.json"}
    argv = results.flags(parser(), config)
    assert argv == ["--steps", "300", "--toys", "rings", "--dims", "--quick", "--no-paper",
                    "--compile"]
    parsed = vars(parser().parse_args(argv))
    assert {k: parsed[k] for k in ("steps", "toys", "dims", "quick", "paper", "compile")} == {
        "steps": 300, "toys": ["rings"], "dims": [], "quick": True, "paper": False,
        "compile": True}
    assert parsed["particles"] == 1  # None where the default is not: today's default
    out = results.flags(parser(), {"out": "/tmp/run/y.json"})
    assert out == ["--out", "/tmp/run/y.json"]
    assert results.repo_path("/a/benchmarks/cache/c.pt") == "benchmarks/cache/c.pt"


def test_flags_refuse_a_config_they_cannot_reproduce():
    p = argparse.ArgumentParser()
    p.add_argument("--T", dest="steps", type=int, default=4)  # the flag is not --steps
    with pytest.raises(ValueError, match="do not parse"):  # argparse refuses --steps
        results.flags(p, {"steps": 8})
    q = argparse.ArgumentParser()
    q.add_argument("--scale", type=lambda s: 2 * float(s), default=1.0)
    with pytest.raises(ValueError, match="do not reproduce"):
        results.flags(q, {"scale": 3.0})


def test_runs_table_lists_flags_other_numbers_and_notes():
    rows = [{"tag": "a", "nll": 3.5, "iwae_16": 3.51, "config": {"tag": "a", "steps": 300}},
            {"tag": "b", "nll": 3.6, "note": "measured elsewhere"}]
    table = results.runs_table(rows, parser(), [("tag", "tag", ""), ("NLL", "nll", ".2f")])
    lines = table.splitlines()
    assert lines[0] == "| tag | NLL | flags | other | notes |"
    assert lines[2].startswith("| a | 3.50 | `--steps 300` | iwae_16 3.51 | 1 |")
    assert lines[3] == "| b | 3.60 | — |  | 2 |"
    assert "1. not recorded (the options came later): --lr, --toys" in table
    assert table.endswith("2. measured elsewhere")
