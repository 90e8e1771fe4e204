"""``benchmarks/ablate.py`` builds the default NTM unless told otherwise, changes only the knobs
it is given, and runs end to end on a tiny budget."""

import json
import math
from pathlib import Path

import pytest
import torch
from _models import seeded
from _scripts import load_script

import ntmdist as nd

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "ablate.py"
bench = load_script(SCRIPT, "ablate_benchmark")


def parse(*argv: str):
    args = []

    def capture(a):
        args.append(a)
        return {"tag": a.tag, "nll": 0.0, "on_support": 0.0, "energy": 0.0, "train_s": 0.0}

    original, bench.run = bench.run, capture
    try:
        bench.main([*argv, "--out", "/dev/null"])
    finally:
        bench.run = original
    return args[0]


def shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_no_knobs_is_the_library_default():
    args = parse()
    with seeded(0):
        built = bench.build(args)
    with seeded(0):
        default = nd.NTM((2,), nd.Schedule(steps=4, t_min=(0.0, 0.05), shift=1.0))
    assert shapes(built) == shapes(default)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(),
                                                 default.state_dict().values(), strict=True))


def test_knobs_change_what_they_name():
    model = bench.build(parse("--step-bins", "8", "--predictor-depth", "6"))
    assert model.step_flow.bins == 8 and model.step_flow.hyper.passes == 2
    assert [b.bins for b in model.transporter.blocks] == [16, 16]
    assert len(model.predictor.net.blocks) == 6
    assert model.step_flow.bound == 3.0
    assert bench.build(parse("--step-bound", "5")).step_flow.bound == 5.0
    model = bench.build(parse("--blocks", "3", "--bins", "8", "--t-min-hi", "0"))
    assert [b.bins for b in model.transporter.blocks] == [8, 8, 8]
    assert model.step_flow.bins == 16 and model.schedule.grid[0] == 0


@pytest.mark.slow
def test_tiny_run_appends_a_json_line(tmp_path, capsys):
    torch.set_default_dtype(torch.float32)  # the benchmark runs in float32 (fixture restores)
    out = tmp_path / "ablate.jsonl"
    for tag, model, clip in (("a", "ntm", "1"), ("b", "ntm", "0"), ("c", "nsf", "1")):
        bench.main(["--tag", tag, "--model", model, "--steps", "2", "--particles", "2",
                    "--nll-points", "8", "--bound-particles", "1", "4", "--grad-clip", clip,
                    "--out", str(out)])
    assert "a: NLL" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["tag"] for r in rows] == ["a", "b", "c"]
    assert [r["config"]["model"] for r in rows] == ["ntm", "ntm", "nsf"]
    for r in rows:
        assert math.isfinite(r["nll"]) and 0 <= r["on_support"] <= 1 and r["train_s"] > 0
        assert r["config"]["steps"] == 2 and r["clipped"] in (0, 0.5, 1)
    assert [r["config"]["grad_clip"] for r in rows] == [1, 0, 1]
    for r in rows[:2]:  # one bound per requested particle count
        assert math.isfinite(r["iwae_1"]) and math.isfinite(r["iwae_4"])
    assert "iwae_1" not in rows[2]  # NSF's NLL is exact


@pytest.mark.slow
def test_train_particles_trains_on_the_bound(tmp_path):
    torch.set_default_dtype(torch.float32)
    out = tmp_path / "ablate.jsonl"
    bench.main(["--tag", "iw", "--train-particles", "2", "--steps", "2", "--particles", "2",
                "--nll-points", "8", "--out", str(out)])
    row = json.loads(out.read_text())
    assert row["config"]["train_particles"] == 2 and math.isfinite(row["nll"])
    assert parse().train_particles == 1  # the default trains on the trajectory NLL
    assert bench.build(parse("--train-particles", "3")).train_particles == 3
    assert bench.build(parse()).train_particles == 1


def test_train_particles_is_refused_for_nsf(capsys):
    try:
        bench.main(["--model", "nsf", "--train-particles", "2", "--out", "/dev/null"])
    except SystemExit as exit:
        assert exit.code == 2
    else:
        raise AssertionError("--model nsf --train-particles 2 was accepted")
    assert "--train-particles trains an NTM" in capsys.readouterr().err
