"""``benchmarks/digits.py``: the split is fixed; each part runs end to end on a tiny budget and
writes its JSON; parts run as separate "processes" share trained models through the cache; the
files merge into one set of tables with a diagnosis and a plot; the diagnosis says what the
numbers say; results written before --parts still print."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "digits.py"

bench = load_script(SCRIPT, "digits_benchmark")
import _digits_cache  # noqa: E402  (on sys.path once the script is loaded)
import _digits_curve  # noqa: E402
import _digits_data  # noqa: E402
import _digits_tables  # noqa: E402

TINY = ["--steps", "3", "--batch-size", "8", "--per-class", "2", "--draws", "2",
        "--particles", "2", "--bits-points", "10"]


def test_split_is_fixed_and_disjoint():
    a, b = bench.split(), bench.split()
    assert torch.equal(a.held_x, b.held_x) and torch.equal(a.centres, b.centres)
    assert len(a.centres) == 1497 and len(a.held_x) == 300
    assert a.held_x.abs().max() < 1
    x, y = a.per_class(3, torch.Generator().manual_seed(0))
    assert x.shape == (30, 1, 8, 8) and torch.equal(y, torch.arange(10).repeat_interleave(3))


def test_cache_trains_once_then_loads_the_same_weights(tmp_path):
    cache, calls = _digits_cache.ModelCache(tmp_path), []

    def train(m):
        calls.append(1)
        with torch.no_grad():
            m.weight.add_(1.0)
        return m, {"train_s": 1.5}

    first, meta = cache.get("a model", torch.nn.Linear(2, 2), {"steps": 3}, train)
    again, meta_again = cache.get("a model", torch.nn.Linear(2, 2), {"steps": 3}, train)
    assert len(calls) == 1 and meta == meta_again == {"train_s": 1.5}
    assert torch.equal(first.weight, again.weight) and not again.weight.requires_grad
    cache.get("a model", torch.nn.Linear(2, 2), {"steps": 4}, train)  # another recipe
    assert len(calls) == 2 and not list(tmp_path.glob("*.lock"))


def test_cache_takes_over_the_lock_of_an_ended_process(tmp_path):
    cache = _digits_cache.ModelCache(tmp_path)
    model = torch.nn.Linear(2, 2)
    lock = cache.path("m", model, {}).with_suffix(".lock")
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    lock.write_text(str(ended.pid))
    trained, _ = cache.get("m", model, {}, lambda m: (m, {}))
    assert trained is model and not lock.exists()


def curve_row(model, method, T, nfe, frechet, kid, precision, recall, spread=0.01):
    """A row of the step-count curve with three draws around the given means."""
    def draws(v, s):
        return [v - s, v, v + s]

    quality = dict(frechet=draws(frechet, 10 * spread), kid=draws(kid, spread / 10),
                   kid_se=[spread / 20] * 3, precision=draws(precision, spread),
                   recall=draws(recall, spread))
    return dict(table="steps", model=model, guidance=0.0, method=method, T=T, nfe=nfe,
                inversion=method == "NTM per-T", steps=10, train_s=1.0, bits=None, params=1,
                draws=3, train=quality, held=quality, accuracy=[0.9] * 3, sample_s=1.0)


def rows_for_diagnosis(ntm_t8_frechet):
    rows = [curve_row("flow matching Euler 64", "flow matching Euler", 64, 64, 30.0, 0.010,
                      0.80, 0.80)]
    for nfe in (4, 8, 16):
        rows += [curve_row(f"flow matching Euler {nfe}", "flow matching Euler", nfe, nfe,
                           60.0, 0.050, 0.60, 0.75),
                 curve_row(f"flow matching Heun NFE {nfe}", "flow matching Heun", nfe // 2,
                           nfe, 50.0, 0.040, 0.65, 0.75),
                 curve_row(f"Gaussian T={nfe}", "Gaussian per-T", nfe, nfe, 55.0, 0.045, 0.6,
                           0.7)]
    # the NTM loses precision (fidelity), not recall; it closes at T = 8 (or not at all)
    rows += [curve_row("NTM T=4", "NTM per-T", 4, 4, 35.0, 0.015, 0.70, 0.79),
             curve_row("NTM T=8", "NTM per-T", 8, 8, ntm_t8_frechet, 0.0101, 0.79, 0.80),
             curve_row("NTM T=16", "NTM per-T", 16, 16, 30.1, 0.0102, 0.80, 0.80)]
    return rows


def test_diagnosis_names_fidelity_where_the_gap_closes_and_each_target():
    text = "\n".join(_digits_curve.diagnosis(rows_for_diagnosis(30.05)))
    assert "NTM per-T at T = 4: precision 0.700" in text
    assert "-0.100, 5.0x the spread" in text
    assert "behind in precision only: the gap is fidelity." in text
    assert "reach Euler 64's (no worse beyond the spread) from T = 8" in text
    targets = text.split("Targets:")[1]
    assert "T = 8 matches flow matching Euler 64" in targets
    assert "within the spread): NTM per-T met" in targets
    assert "T = 4 within 1.2x of Euler 64's Frechet distance: NTM per-T met (measured 1.17x)" \
        in targets
    assert "Gaussian chain (lower Frechet and KID): NTM per-T met" in targets
    late = "\n".join(_digits_curve.diagnosis(rows_for_diagnosis(40.0)))
    assert "within the spread): NTM per-T not met (measured Frechet 40.00" in late


def test_diagnosis_lists_what_is_behind_and_what_is_missing():
    rows = [r for r in rows_for_diagnosis(30.05) if r["model"] != "flow matching Heun NFE 16"]
    rows[1]["train"]["frechet"] = [20.0] * 3  # Euler NFE 4 now beats the NTM in Frechet only
    text = "\n".join(_digits_curve.diagnosis(rows))
    assert "NTM per-T not met (at T = 4 behind Euler NFE 4 (Frechet); not measured: Heun NFE " \
           "16)" in text
    assert "Needs flow matching Euler 64" in "\n".join(_digits_curve.diagnosis(rows[1:]))


def test_merge_joins_parts_and_refuses_what_does_not_belong_together():
    config = {key: 1 for key in _digits_tables.SHARED}
    recipe = {"classifier": {"accuracy": 0.99, "recipe": {"v": 1}}, "references": []}
    a = dict(config=config, parts=["main"], total_s=2.0, results=[{"model": "a"}], **recipe)
    b = dict(config=config, parts=["steps"], total_s=3.0, results=[{"model": "b"}], **recipe)
    merged = _digits_tables.merge([a, b])
    assert merged["parts"] == ["main", "steps"] and merged["total_s"] == 5.0
    assert [r["model"] for r in merged["results"]] == ["a", "b"]
    with pytest.raises(ValueError, match="different --draws"):
        _digits_tables.merge([a, dict(b, config={**config, "draws": 2})])
    with pytest.raises(ValueError, match="a part is in two files"):
        _digits_tables.merge([a, dict(b, parts=["main"])])
    with pytest.raises(ValueError, match="before --parts"):
        _digits_tables.merge([a, {"config": config, "results": []}])


@pytest.mark.slow
def test_parts_in_two_processes_share_models_merge_print_and_plot(tmp_path, monkeypatch,
                                                                    capsys):
    torch.set_default_dtype(torch.float32)  # the benchmark runs in float32 (fixture restores)
    monkeypatch.setattr(_digits_data, "CLASSIFIER_RECIPE",
                        {**_digits_data.CLASSIFIER_RECIPE, "steps": 5})
    cache, models = tmp_path / "classifier.pt", tmp_path / "models"
    common = [*TINY, "--classifier", str(cache), "--cache", str(models)]
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    bench.main(["--parts", "main", "guidance", "warmstart", "--out", str(first), *common])
    checkpoints = {p.name: p.stat().st_mtime_ns for p in models.glob("*.pt")}
    bench.main(["--parts", "predictors", "steps", "--out", str(second), *common])
    printed = capsys.readouterr().out
    assert "| NTM T=4 |" in printed and "warm start from flow matching" in printed
    assert "| NTM T=4 from FM + 3 | 3 |" in printed
    a, b = (json.loads(p.read_text()) for p in (first, second))
    assert a["classifier"]["trained_now"] and not b["classifier"]["trained_now"]
    assert a["parts"] == ["main", "guidance", "warmstart"] and b["parts"] == ["steps",
                                                                             "predictors"]
    # the second process loaded the first one's models (the NTM T=4: the predictors' budget,
    # the curve's T = 4 point) without training them again
    assert set(checkpoints) < {p.name for p in models.glob("*.pt")}
    assert all(models.joinpath(n).stat().st_mtime_ns == t for n, t in checkpoints.items())
    ntm = next(r for r in a["results"] if r["model"] == "NTM T=4")
    same_time = next(r for r in b["results"] if r["model"].endswith("transformer (same time)"))
    assert same_time["steps"] >= 1 and ntm["train_s"] > 0
    models_a = {r["model"] for r in a["results"]}
    assert {"NTM T=4", "Gaussian T=4", "flow matching Euler 4", "flow matching Euler 64",
            "zuko NSF (same time)", "zuko MAF (same steps)", "NTM T=4 learned",
            "NTM T=4 from FM + 3"} <= models_a and not any("scratch" in m for m in models_a)
    assert {"NTM multi-T T=16 learned", "NTM T=8", "Gaussian T=16", "Gaussian multi-T T=8",
            "flow matching Euler 16", "flow matching Heun NFE 64",
            "NTM T=4 transformer (same steps)"} <= {r["model"] for r in b["results"]}
    multi = next(r for r in b["results"] if r["model"] == "NTM multi-T T=4")
    assert multi["params"] == ntm["params"]  # the NTM's own, though a denoiser is attached
    learned = next(r for r in a["results"] if r["model"] == "NTM T=4 learned")
    assert learned["steps"] == 3 and learned["nfe"] == 5 and not learned["inversion"]
    assert len(a["references"]) == 3
    for r in a["results"] + b["results"]:
        assert r["draws"] == 2 and len(r["accuracy"]) == 2
        for ref in ("train", "held"):
            assert set(r[ref]) == {"frechet", "kid", "kid_se", "precision", "recall"}
            assert all(math.isfinite(v) for values in r[ref].values() for v in values)
        assert r["bits"] is None or math.isfinite(r["bits"])
    png = tmp_path / "steps.png"
    bench.main(["--print", str(first), str(second), "--plot", str(png)])
    merged = capsys.readouterr().out
    for heading in ("reference rows", "the step-count curve", "transformer vs U-Net",
                    "against the held-out images", "diagnosis", "classifier-free guidance"):
        assert heading in merged
    assert "| NTM per-T | 8 | 8 | yes | NTM T=8 |" in merged and "Targets:" in merged
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    net, accuracy, fresh = bench.load_classifier(bench.split(), cache)
    assert not fresh and accuracy == a["classifier"]["accuracy"]


@pytest.mark.slow
def test_fewer_fine_tuning_steps_add_a_scratch_row(tmp_path, capsys):
    torch.set_default_dtype(torch.float32)
    out = tmp_path / "digits.json"
    bench.main(["--parts", "warmstart", "--fm-steps", "2", *TINY, "--cache",
                str(tmp_path / "models"), "--out", str(out)])
    printed = capsys.readouterr().out
    rows = {r["model"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["NTM T=4 from FM + 2"]["steps"] == rows["NTM T=4 scratch 2"]["steps"] == 2
    assert "| NTM T=4 scratch 2 | 2 |" in printed


FORMER = {  # the layout of results written before --parts (benchmarks/results/digits.json)
    "config": {"steps": 1000, "per_class": 500, "fm_init": True,
               "out": "/elsewhere/benchmarks/results/digits.json"},
    "classifier": {"accuracy": 0.9933, "trained_now": False, "recipe": {"version": 1}},
    "floor": {"frechet": 37.2279, "accuracy": 1.0, "n": 1497}, "total_s": 2849.0,
    "results": [
        {"table": "main", "model": "NTM T=4", "guidance": 0.0, "params": 618866, "steps": 1000,
         "train_s": 291.65, "bits": 2.018, "frechet": 43.988, "accuracy": 0.9914,
         "sample_s": 2.09},
        {"table": "main", "model": "NTM T=4", "guidance": 1.0, "params": 618866, "steps": 1000,
         "train_s": 291.65, "bits": 2.018, "frechet": 63.989, "accuracy": 1.0, "sample_s": 4.6},
        {"table": "main", "model": "flow matching Euler 64", "guidance": 0.0, "params": 377537,
         "steps": 1000, "train_s": 46.0, "bits": None, "frechet": 32.713, "accuracy": 0.964,
         "sample_s": 25.6},
        {"table": "issue5", "model": "NTM T=4 learned", "guidance": 0.0, "params": 50000,
         "steps": 1000, "train_s": 194.0, "bits": 2.018, "frechet": 41.02, "accuracy": 0.991,
         "sample_s": 0.78},
    ],
}


def test_results_written_before_parts_print_alone_with_the_columns_they_have(tmp_path, capsys):
    """One draw against the held-out images; the warm-start rows under the former table key
    "issue5"; no diagnosis. With results of today, they print alone and the others merge."""
    path = tmp_path / "digits.json"
    path.write_text(json.dumps(FORMER))
    bench.main(["--print", str(path)])
    printed = capsys.readouterr().out
    heading = "### digits: warm start from flow matching, and denoisers"
    assert heading in printed and "| NTM T=4 learned |" in printed.split(heading)[1]
    assert "quality against the held-out images)" in printed
    assert "| NTM T=4 | 618,866 | 1000 | 292 | 2.018 | 43.99 | 1.34x | 99.1% |" in printed
    assert "| NTM T=4 | 1 | 63.99 | 1.96x | 100.0% |" in printed
    assert "| training images (1497) | 37.23 | 100.0% |" in printed
    assert "KID" not in printed and "diagnosis" not in printed
    config = {**{key: 1 for key in _digits_tables.SHARED}, "draws": 3, "per_class": 2}
    today = dict(config=config, classifier=FORMER["classifier"], references=[],
                 parts=["steps"], total_s=5.0, results=rows_for_diagnosis(30.05))
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    paths[0].write_text(json.dumps(today))
    paths[1].write_text(json.dumps(dict(today, parts=["main"], results=[])))
    bench.main(["--print", str(path), *map(str, paths)])
    printed = capsys.readouterr().out
    assert printed.count("### digits: diagnosis") == 1 and "total 2849 s" in printed
    assert "total 10 s (steps 5 s, main 5 s)" in printed
