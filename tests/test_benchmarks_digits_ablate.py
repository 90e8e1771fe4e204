"""``benchmarks/digits_ablate.py`` builds digits.py's NTM unless told otherwise, changes only the
knobs it is given, and runs end to end (from scratch with a learned denoiser, and from flow
matching) on a tiny budget."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _models import seeded
from _scripts import load_script

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
ablate = load_script(BENCH / "digits_ablate.py", "digits_ablate_benchmark")
import _digits_bench  # noqa: E402  (on sys.path once a script is loaded)
import _digits_data  # noqa: E402


def built(*argv: str):
    with seeded(0):
        return ablate.build(ablate.parse(list(argv)))


def test_no_knobs_is_the_benchmark_ntm():
    model, velocity = built()
    with seeded(0):  # digits.py's "NTM T=4"
        reference = _digits_bench.MODELS["NTM T=4"][0](SimpleNamespace(shift=0.0))
    assert velocity is None
    a, b = model.state_dict(), reference.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_knobs_change_what_they_name():
    model, _ = built("--blocks", "3", "--patch", "1", "--predictor-width", "16")
    assert len(model.transporter.blocks) == 3
    assert all(b.patch == 1 for b in model.transporter.blocks)
    default, _ = built()
    assert default.transporter.blocks[0].patch == 2 and default.train_particles == 1
    assert built("--train-particles", "4")[0].train_particles == 4
    assert sum(p.numel() for p in model.predictor.parameters()) < sum(
        p.numel() for p in default.predictor.parameters())
    model, velocity = built("--from-fm", "5")
    assert model is None and velocity.event_shape == torch.Size(_digits_data.EVENT)


@pytest.mark.slow
def test_tiny_runs_append_json_lines(tmp_path, capsys):
    torch.set_default_dtype(torch.float32)  # the benchmark runs in float32 (fixture restores)
    out = tmp_path / "digits_ablate.jsonl"
    tiny = ["--per-class", "2", "--particles", "2", "--bits-points", "4", "--out", str(out)]
    ablate.main(["--tag", "scratch", "--steps", "2", "--denoisers", "2:8", *tiny])
    ablate.main(["--tag", "fm", "--from-fm", "2", "--steps", "0", *tiny])
    assert "scratch:" in capsys.readouterr().out
    scratch, fm = [json.loads(line) for line in out.read_text().splitlines()]
    assert (scratch["tag"], fm["tag"]) == ("scratch", "fm")
    for row in (scratch, fm):
        for key in ("bits", "frechet", "tweedie_frechet"):
            assert math.isfinite(row[key])
        assert 0 <= row["accuracy"] <= 1
    assert "fm64_frechet" in fm and "fm4_frechet" not in scratch
    assert math.isfinite(scratch["learned_2x8_frechet"]) and scratch["learned_2x8_sample_s"] > 0
    assert not any(key.startswith("learned") for key in fm)
    assert fm["config"]["from_fm"] == 2 and scratch["config"]["steps"] == 2
