"""``benchmarks/digits.py`` runs end to end on a tiny budget, writes its JSON, caches and reuses
its classifier, and the split is fixed."""

import json
import math
from pathlib import Path

import pytest
import torch
from _scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "digits.py"




bench = load_script(SCRIPT, "digits_benchmark")


def test_split_is_fixed_and_disjoint():
    a, b = bench.split(), bench.split()
    assert torch.equal(a.held_x, b.held_x) and torch.equal(a.centres, b.centres)
    assert len(a.centres) == 1497 and len(a.held_x) == 300
    assert a.held_x.abs().max() < 1
    x, y = a.per_class(3, torch.Generator().manual_seed(0))
    assert x.shape == (30, 1, 8, 8) and torch.equal(y, torch.arange(10).repeat_interleave(3))


@pytest.mark.slow
def test_tiny_run_writes_json_and_reuses_the_classifier(tmp_path, monkeypatch, capsys):
    torch.set_default_dtype(torch.float32)  # the benchmark runs in float32 (fixture restores)
    monkeypatch.setattr(bench, "CLASSIFIER_RECIPE", {**bench.CLASSIFIER_RECIPE, "steps": 5})
    out, cache = tmp_path / "digits.json", tmp_path / "classifier.pt"
    argv = ["--steps", "3", "--batch-size", "8", "--per-class", "2", "--particles", "2",
            "--bits-points", "50", "--classifier", str(cache), "--out", str(out)]
    bench.main(argv)
    printed = capsys.readouterr().out
    assert "| NTM T=4 |" in printed and "warm start from flow matching" in printed
    report = json.loads(out.read_text())
    assert report["classifier"]["trained_now"] and cache.exists()
    models = {r["model"] for r in report["results"]}
    assert {"NTM T=4", "Gaussian T=4", "flow matching Euler 4", "flow matching Euler 64",
            "zuko NSF (same time)", "zuko MAF (same steps)", "NTM T=4 learned"} <= models
    # fine-tuned from FM for as many steps as the NTM, which is then the scratch reference
    assert "NTM T=4 from FM + 3" in models and not any("scratch" in m for m in models)
    assert "| NTM T=4 from FM + 3 | 3 |" in printed
    learned = next(r for r in report["results"] if r["model"] == "NTM T=4 learned")
    assert learned["steps"] == 3  # the denoiser trains as many steps as the NTM by default
    for r in report["results"]:
        assert math.isfinite(r["frechet"]) and 0 <= r["accuracy"] <= 1
        assert r["bits"] is None or math.isfinite(r["bits"])
    net, accuracy, fresh = bench.load_classifier(bench.split(), cache)
    assert not fresh and accuracy == report["classifier"]["accuracy"]


@pytest.mark.slow
def test_fewer_fine_tuning_steps_add_a_scratch_row(tmp_path, capsys):
    torch.set_default_dtype(torch.float32)
    out = tmp_path / "digits.json"
    bench.main(["--steps", "3", "--fm-steps", "2", "--batch-size", "8", "--per-class", "1",
                "--particles", "2", "--bits-points", "10", "--out", str(out)])
    printed = capsys.readouterr().out
    rows = {r["model"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["NTM T=4 from FM + 2"]["steps"] == rows["NTM T=4 scratch 2"]["steps"] == 2
    assert "| NTM T=4 scratch 2 | 2 |" in printed


def test_saved_results_with_the_former_table_key_print_the_warm_start_table():
    """Results written before the rename file the warm-start rows under "issue5"."""
    saved = json.loads((ROOT / "benchmarks" / "results" / "digits.json").read_text())
    assert {r["table"] for r in saved["results"]} == {"main", "issue5"}
    printed = bench.tables(saved["results"], saved["floor"], saved["classifier"])
    heading = "### digits: warm start from flow matching, and denoisers"
    assert heading in printed
    assert "| NTM T=4 learned |" in printed.split(heading)[1]
