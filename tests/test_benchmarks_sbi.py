"""``benchmarks/sbi.py``: its pieces (split, standardisation, rejection outside the prior,
tables) everywhere, and a quick end-to-end run where sbibm is installed.

sbibm is an optional benchmark extra (``pip install 'ntmdist[sbibm]'``; it pins an old sbi and
many packages of its own), not a dev dependency: the end-to-end test is skipped without it."""

import json
import math
import sys

import pytest
import torch
from _scripts import ROOT, load_script

bench = load_script(ROOT / "benchmarks" / "sbi.py", "sbi_benchmark")
_results = sys.modules["_results"]  # the helpers the script imported


def test_split_holds_out_a_tenth_without_overlap():
    theta, x = torch.arange(50.0)[:, None], -torch.arange(50.0)[:, None]
    (t_tr, x_tr), (t_val, x_val) = bench.split(theta, x, 0.1, seed=3)
    assert len(t_val) == 5 and len(t_tr) == 45
    assert torch.equal(x_tr, -t_tr) and torch.equal(x_val, -t_val)  # pairs stay together
    assert sorted(torch.cat([t_tr, t_val]).flatten().tolist()) == list(range(50))


def test_standardise_uses_the_given_statistics_and_inverts():
    data = torch.randn(200, 3) * torch.tensor([1.0, 5.0, 0.1]) + 2
    scale = bench.Standardise(data)
    z = scale(data)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-10)
    assert torch.allclose(z.std(0), torch.ones(3))
    assert torch.allclose(scale.inverse(z), data)


class Box:
    support = torch.distributions.constraints.independent(
        torch.distributions.constraints.interval(-1.0, 1.0), 1)


def test_posterior_rejects_draws_outside_the_prior(monkeypatch):
    """Draws are mapped back to theta's scale, those outside the support dropped and more
    drawn; the fraction accepted and the time of the first draw are returned."""
    # theta = (z_1, 2 + 2**0.5 z_2): the second and fifth draws fall outside [-1, 1]^2
    draws = iter([torch.tensor([[0.5, -1.4], [3.0, -1.4], [0.0, -1.27]]),
                  torch.tensor([[0.1, -1.35], [9.0, 9.0], [0.2, -1.4]])])
    monkeypatch.setattr(bench, "draw", lambda *args: next(draws))
    half = 0.5**0.5
    scale = (bench.Standardise(torch.tensor([[-half, 1.0], [half, 3.0]])),  # mean (0, 2)
             bench.Standardise(torch.tensor([[0.0], [2.0]])))
    assert torch.allclose(scale[0].std, torch.tensor([1.0, 2**0.5]))
    samples, seconds, accepted = bench.posterior("nsf", None, 3, torch.ones(1), scale, Box(), 0,
                                                 "cpu")
    kept = torch.tensor([[0.5, -1.4], [0.0, -1.27], [0.1, -1.35]])  # z_2 < -1: scale first
    assert torch.allclose(samples, scale[0].inverse(kept)) and seconds > 0
    assert accepted == 4 / 6
    monkeypatch.setattr(bench, "draw", lambda *args: torch.full((3, 2), 5.0))
    with pytest.raises(RuntimeError, match="prior's support"):
        bench.posterior("ntm", None, 3, torch.ones(1), scale, Box(), 0, "cpu")


def test_tables_give_mean_spread_and_ratios(tmp_path, capsys):
    rows = [dict(task="two_moons", model=bench.MODELS[m], observations=[1, 2, 3],
                 c2st=c, train_s=t, epochs=40.0, best_epoch=20.0, val_loss=-1.0,
                 sample_s=s, accepted=[1.0, 0.9, 0.8])
            for m, c, t, s in (("ntm", [0.5, 0.6, 0.7], 30.0, [1.0, 3.0, 2.0]),
                               ("nsf", [0.6, 0.6, 0.9], 10.0, [0.5, 0.5, 0.5]))]
    summary = {s["model"]: s for s in bench.summary(rows)}
    ntm = summary["NTM T=4"]
    assert math.isclose(ntm["c2st"], 0.6) and math.isclose(ntm["c2st_sd"], 0.1)
    assert ntm["c2st_range"] == "0.500-0.700" and ntm["sample_s"] == 2.0
    assert math.isclose(ntm["train_ratio"], 3.0) and math.isclose(ntm["sample_ratio"], 4.0)
    assert "train_ratio" not in summary["zuko NSF"]
    paths = [tmp_path / "ntm.json", tmp_path / "nsf.json"]  # e.g. runs in parallel
    for path, row in zip(paths, rows, strict=True):
        path.write_text(json.dumps({"config": {"samples": 10_000}, "results": [row]}))
    bench.main(["--print", *map(str, paths)])
    printed = capsys.readouterr().out
    assert printed.count("### sbibm") == 1  # one summary of both files
    assert "| two_moons | NTM T=4 | 0.600 | 0.100 | 0.500-0.700 | 30 |" in printed
    assert "| zuko NSF | 0.600 | 0.600 | 0.900 |" in printed  # per observation
    assert "sample s/10000" in printed
    paths[1].write_text(json.dumps({"config": {"samples": 1000}, "results": [rows[1]]}))
    with pytest.raises(ValueError, match="different --samples"):
        bench.main(["--print", *map(str, paths)])


@pytest.mark.parametrize("argv", [[], ["--quick"], ["--quick", "--tasks", "slcp", "--lr", "5"]])
def test_saved_options_give_back_the_command(argv):
    """docs/benchmarks.md shows each JSON's command: the flags of the resolved options it saved
    parse back to the same run."""
    parser = bench.build_parser()
    args = bench.resolve(parser.parse_args(argv))
    config = {k: str(v) if k == "out" else v for k, v in vars(args).items()}
    again = bench.resolve(parser.parse_args(_results.flags(parser, config)))
    assert vars(again) == vars(args)


def test_missing_sbibm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sbibm", None)
    with pytest.raises(ImportError, match=r"pip install 'ntmdist\[sbibm\]'"):
        bench.load_sbibm()


@pytest.mark.slow
def test_quick_run_trains_both_models_under_one_protocol(tmp_path, monkeypatch):
    pytest.importorskip("sbibm", reason="sbibm is an optional benchmark extra "
                                        "(pip install 'ntmdist[sbibm]'), not a dev dependency")
    torch.set_default_dtype(torch.float32)  # the benchmark runs in float32 (fixture restores)
    calls = []
    fit = bench.fit

    def spy(model, data, **options):
        calls.append({k: v for k, v in options.items() if k != "loss_fn"})
        return fit(model, data, **options)

    monkeypatch.setattr(bench, "fit", spy)
    out = tmp_path / "sbi.json"
    bench.main(["--quick", "--simulations", "300", "--samples", "200", "--observations", "1",
                "--max-epochs", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert [r["model"] for r in rows] == ["NTM T=4", "zuko NSF"]
    validation = [c.pop("validation") for c in calls]
    assert validation[0] is validation[1] and len(validation[0][0]) == 30
    assert calls[0] == calls[1] and calls[0]["patience"] == 5
    assert calls[0]["steps"] == 2 * calls[0]["validate_every"] == 2 * math.ceil(270 / 256)
    for r in rows:
        assert r["task"] == "two_moons" and r["observations"] == [1]
        assert 0 <= r["c2st"][0] <= 1 and 0 < r["accepted"][0] <= 1
        assert r["sample_s"][0] > 0 and 0 < r["epochs"] <= 2 and math.isfinite(r["val_loss"])
