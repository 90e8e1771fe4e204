"""``benchmarks/toy2d.py`` runs end to end on a tiny budget: every row of the table, the warm-start
rows included, written to JSON and re-printed from it; the learned denoiser trains as many steps
as the NTM unless told otherwise."""

import json
import math
from pathlib import Path

import pytest
import torch
from _scripts import load_script

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
toy2d = load_script(BENCH / "toy2d.py", "toy2d_benchmark")


@pytest.mark.slow
def test_tiny_run_writes_every_row_and_reprints(tmp_path, capsys, monkeypatch):
    torch.set_default_dtype(torch.float32)  # the benchmark runs in float32 (fixture restores)
    steps = []
    fit_denoiser = toy2d.fit_denoiser

    def spy(*args, **kwargs):
        steps.append(kwargs["steps"])
        return fit_denoiser(*args, **kwargs)

    monkeypatch.setattr(toy2d, "fit_denoiser", spy)
    out = tmp_path / "toy2d.json"
    toy2d.main(["--toys", "checkerboard", "--steps", "3", "--batch-size", "16",
                "--particles", "2", "--nll-points", "8", "--no-paper", "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert [r["model"] for r in rows] == [
        "NTM T=4", "Gaussian T=4", "flow matching Euler 4", "flow matching Euler 64",
        "zuko NSF (3 transforms)", "NTM T=4 from FM + 3", "NTM T=4 tweedie",
        "NTM T=4 learned"]
    assert steps == [3]
    for r in rows:
        assert r["toy"] == "checkerboard" and 0 <= r["on_support"] <= 1
        assert math.isfinite(r["energy"]) and r["sample_s"] > 0
        assert r["nll"] is None or math.isfinite(r["nll"])
    printed = capsys.readouterr().out
    toy2d.main(["--print", str(out)])
    reprinted = capsys.readouterr().out.strip()
    assert reprinted.startswith("### checkerboard") and reprinted in printed


@pytest.mark.slow
def test_fm_steps_other_than_steps_adds_a_scratch_row(tmp_path, monkeypatch):
    torch.set_default_dtype(torch.float32)
    calls = []
    fit = toy2d.fit

    def spy(model, *args, **kwargs):
        net = getattr(model, "predictor", model)  # fit also trains the velocity
        calls.append((type(net).__name__, kwargs["steps"], "aux" in kwargs))
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(toy2d, "fit", spy)
    out = tmp_path / "toy2d.json"
    toy2d.main(["--toys", "checkerboard", "--steps", "3", "--fm-steps", "2", "--batch-size", "16",
                "--particles", "2", "--nll-points", "8", "--no-paper", "--out", str(out)])
    rows = [r["model"] for r in json.loads(out.read_text())["results"]]
    assert rows[5:7] == ["NTM T=4 from FM + 2", "NTM T=4 scratch 2"]
    assert ("FlowMatchingPredictor", 2, True) in calls  # fine-tuned N steps with alignment
    assert sum(1 for c in calls if c[1] == 2 and not c[2]) == 1  # one scratch NTM for N steps


@pytest.mark.slow
def test_train_particles_adds_the_iwae_trained_ntm_last(tmp_path, monkeypatch):
    """The extra row starts from the initial weights of "NTM T=4" and trains on the bound."""
    torch.set_default_dtype(torch.float32)
    starts = []
    fit = toy2d.fit

    def spy(model, *args, **kwargs):
        if hasattr(model, "train_particles"):
            starts.append((model.train_particles, model.config()["transporter"] is None,
                           {k: v.clone() for k, v in model.state_dict().items()}))
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(toy2d, "fit", spy)
    out = tmp_path / "toy2d.json"
    toy2d.main(["--toys", "checkerboard", "--steps", "2", "--batch-size", "16", "--particles",
                "2", "--nll-points", "8", "--no-paper", "--no-fm-init", "--train-particles", "3",
                "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert rows[-1]["model"] == "NTM T=4, 3 traj/example" and len(rows) == 6
    assert math.isfinite(rows[-1]["nll"]) and 0 <= rows[-1]["on_support"] <= 1
    (k0, gauss0, first), (_, gauss1, _), (k, gauss, last) = starts
    assert (k0, k, gauss0, gauss1, gauss) == (1, 3, False, True, False)
    assert first.keys() == last.keys()
    assert all(torch.equal(first[name], last[name]) for name in first)
