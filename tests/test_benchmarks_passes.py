"""``benchmarks/passes.py`` builds the models it names and runs end to end on a tiny budget."""

import json
import math
from pathlib import Path

import pytest
import torch
from _scripts import load_script

import ntmdist as nd

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "passes.py"
bench = load_script(SCRIPT, "passes_benchmark")


@pytest.mark.parametrize("passes", [2, 64])
@pytest.mark.parametrize("step_flow", [True, False])
def test_models_have_the_passes_they_report(passes, step_flow):
    m = bench.model(passes, step_flow)
    assert [b.hyper.passes for b in m.transporter.blocks] == [passes, passes]
    assert (m.step_flow.hyper.passes == passes) if step_flow else m.step_flow is None
    assert m.config()["transporter_options"]["passes"] == passes
    if step_flow:  # the library's default per-step bijector, only its passes changed
        default = nd.defaults.vector_splines(64)[1]
        assert (m.step_flow.bins, m.step_flow.bound) == (default["bins"], default["bound"])


@pytest.mark.parametrize("step_flow", [True, False])
def test_models_are_seeded_whatever_ran_before(step_flow):
    first = bench.model(2, step_flow).state_dict()
    torch.randn(1000)  # the global stream moves (as timing a sampler moves it)
    second = bench.model(2, step_flow).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_tiny_run_writes_json(tmp_path, capsys):
    torch.set_default_dtype(torch.float32)  # the benchmark runs in float32 (fixture restores)
    out = tmp_path / "passes.json"
    bench.main(["--steps", "2", "--passes", "2", "64", "--particles", "2", "--repeats", "1",
                "--out", str(out)])
    assert "| step flow | 2 |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["results"]
    assert [(r["model"], r["passes"]) for r in rows] == [
        ("step flow", 2), ("step flow", 64), ("paper (no step flow)", 2),
        ("paper (no step flow)", 64)]
    for r in rows:
        assert math.isfinite(r["bpd"]) and r["rate"] > 0
        assert (r["vs_full"] == 1) == (r["passes"] == 64)
