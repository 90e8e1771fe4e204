"""The command line: fit, sample, evaluate, resume, and clear errors for bad input."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from ntmdist import cli
from ntmdist.data import TOYS
from ntmdist.training.checkpoint import load_checkpoint, save_checkpoint

TINY = ["--width", "16", "--depth", "1", "--transporter-width", "8", "--batch-size", "32",
        "--eval-size", "64", "--samples", "200", "--particles", "4", "--no-progress",
        "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny fit on the checkerboard (NTM and Gaussian baseline), shared by several tests."""
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["fit", "checkerboard", "--steps", "3", "--out", str(out), *TINY]) == 0
    return out


def usage_error(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_fit_writes_checkpoints_metrics_and_figure(run):
    assert load_checkpoint(run / "model.pt")["step"] == 3
    assert load_checkpoint(run / "baseline.pt")["step"] == 3
    assert (run / "samples.png").stat().st_size > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"] == "checkerboard" and metrics["event_shape"] == [2]
    assert set(metrics["models"]) == {"ntm", "gaussian"}
    keys = {"nll", "nll_per_dim", "energy_distance", "on_support", "sample_seconds_per_10k",
            "train_seconds", "train_loss"}
    for row in metrics["models"].values():
        assert keys <= set(row) and all(math.isfinite(row[k]) for k in keys), row
        assert 0 <= row["on_support"] <= 1 and row["step"] == 3
    assert metrics["reference"]["nll"] == pytest.approx(math.log(32))
    assert metrics["config"]["steps"] == 3


def test_sample_from_checkpoint(run, capsys):
    out, png = run / "x.npy", run / "x.png"
    assert cli.main(["sample", str(run / "model.pt"), "--n", "50", "--out", str(out),
                     "--png", str(png), "--T", "2"]) == 0
    x = np.load(out)
    assert x.shape == (50, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    assert png.stat().st_size > 0
    assert str(out) in capsys.readouterr().out
    for name, seed in (("y", "0"), ("z", "0"), ("w", "1")):
        cli.main(["sample", str(run / "model.pt"), "--n", "50", "--out", str(run / f"{name}.npy"),
                  "--seed", seed])
    assert (run / "y.png").exists()  # default figure: next to --out
    y, z, w = (np.load(run / f"{name}.npy") for name in "yzw")
    assert np.array_equal(y, z) and not np.array_equal(y, w)


def test_evaluate_writes_json(run, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert cli.main(["evaluate", str(run / "model.pt"), "checkerboard", "--particles", "4",
                     "--eval-size", "32", "--samples", "100", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["step"] == 3 and report["eval_size"] == 32 and report["particles"] == 4
    assert all(math.isfinite(report[k]) for k in ("nll", "energy_distance", "on_support"))


def test_evaluate_on_npy_and_wrong_width(run, tmp_path, capsys):
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.random.default_rng(0).normal(size=(20, 2)))
    np.save(bad, np.zeros((20, 3)))
    assert cli.main(["evaluate", str(run / "model.pt"), str(good), "--particles", "2",
                     "--samples", "50", "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads(capsys.readouterr().out)["eval_size"] == 20
    err = usage_error(capsys, ["evaluate", str(run / "model.pt"), str(bad)])
    assert "(20, 3)" in err and "(N >= 2, 2)" in err


def test_resume_continues_from_checkpoint_step(tmp_path, capsys):
    base = ["fit", "two_moons", "--out", str(tmp_path), "--no-baseline", *TINY]
    rng = torch.get_rng_state()
    cli.main([*base, "--steps", "2"])
    assert torch.equal(torch.get_rng_state(), rng)  # seeded through generators and fork_rng
    with pytest.warns(UserWarning, match="run of 2 steps"):  # a longer run than the first
        assert cli.main([*base, "--steps", "4", "--resume"]) == 0
    assert "resuming from step 2" in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "model.pt")
    assert state["step"] == 4 and len(state["history"]["loss"]) == 4
    assert not (tmp_path / "baseline.pt").exists()
    err = usage_error(capsys, [*base, "--steps", "5", "--resume", "--width", "8"])
    assert "another configuration" in err


def test_resume_from_a_checkpoint_of_an_earlier_version(tmp_path, capsys):
    """The saved config is compared with the new model's once both are in the current form: a
    checkpoint written before the conditioning keys (and with the old names) resumes; another
    width is still refused."""
    base = ["fit", "two_moons", "--out", str(tmp_path), "--no-baseline", *TINY]
    cli.main([*base, "--steps", "2"])
    path = tmp_path / "model.pt"
    state = load_checkpoint(path)
    config = state["meta"]["model"]
    config["label_dropout"] = config.pop("condition_dropout")
    del config["context"], config["condition_transporter"]
    save_checkpoint(path, state)
    with pytest.warns(UserWarning, match="run of 2 steps"):
        assert cli.main([*base, "--steps", "3", "--resume"]) == 0
    assert "resuming from step 2" in capsys.readouterr().out
    assert load_checkpoint(path)["step"] == 3
    err = usage_error(capsys, [*base, "--steps", "4", "--resume", "--width", "8"])
    assert "another configuration" in err


def test_fit_on_npy(tmp_path):
    data = tmp_path / "points.npy"
    np.save(data, np.random.default_rng(0).normal(size=(50, 3)))
    assert cli.main(["fit", str(data), "--steps", "2", "--out", str(tmp_path / "o"), *TINY]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["data"] == "points" and metrics["event_shape"] == [3]
    assert set(metrics["models"]) == {"ntm"}  # no baseline by default for arrays
    assert metrics["models"]["ntm"]["eval_size"] == 10
    assert "on_support" not in metrics["models"]["ntm"]
    assert (tmp_path / "o" / "samples.png").stat().st_size > 0


def test_unknown_data_name_lists_known_names(capsys):
    err = usage_error(capsys, ["fit", "checkerbord", "--steps", "1"])
    assert "unknown data 'checkerbord'" in err and "Traceback" not in err
    assert all(name in err for name in TOYS)
    assert "usage: ntmdist fit" in err


@pytest.mark.parametrize("array, message", [
    (np.zeros((10,)), "shape (N, D)"),
    (np.zeros((10, 2, 2)), "shape (N, D)"),
    (np.array([[0.0, 1.0]] * 9 + [[np.nan, 0.0]]), "NaN"),
    (np.array([["a", "b"]] * 10), "real numbers"),
])
def test_bad_npy_is_a_clear_error(tmp_path, capsys, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cli.load_array(path)
    err = usage_error(capsys, ["fit", str(path), "--steps", "1", "--out", str(tmp_path)])
    assert message in err and "Traceback" not in err


def test_missing_npy_and_too_few_rows(tmp_path, capsys):
    assert "no such file" in usage_error(capsys, ["fit", str(tmp_path / "none.npy")])
    np.save(tmp_path / "few.npy", np.zeros((5, 2)))
    assert "at least 10" in usage_error(capsys, ["fit", str(tmp_path / "few.npy")])


def test_missing_truncated_and_foreign_checkpoints(run, tmp_path, capsys):
    err = usage_error(capsys, ["sample", str(tmp_path / "nothing.pt")])
    assert "no checkpoint at" in err and "nothing.pt" in err
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run / "model.pt").read_bytes()[:1000])
    err = usage_error(capsys, ["sample", str(truncated)])
    assert "truncated, corrupt" in err and "Traceback" not in err
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert "not an ntmdist checkpoint" in usage_error(capsys, ["evaluate", str(foreign),
                                                               "checkerboard"])
    other = tmp_path / "other.pt"
    save_checkpoint(other, {"step": 1, "model": {}, "ema": None, "meta": {"model_class": "MLP"}})
    assert "of 'MLP', not of an NTM" in usage_error(capsys, ["sample", str(other)])


@pytest.mark.slow
def test_bad_options_and_help_subprocess(capsys):
    assert "expected an integer >= 1" in usage_error(capsys, ["fit", "rings", "--steps", "0"])
    assert "t_min must satisfy" in usage_error(capsys, ["fit", "rings", "--t-min", "0.5"])
    done = subprocess.run([sys.executable, "-m", "ntmdist", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert all(word in done.stdout for word in ("fit", "sample", "evaluate"))


def test_threads_restored():
    before = torch.get_num_threads()
    with pytest.raises(SystemExit):
        cli.main(["fit", "no_such_toy", "--threads", str(before + 1)])
    assert torch.get_num_threads() == before


def test_multi_t_fit_samples_its_trained_t_without_a_note(tmp_path, capsys):
    out = tmp_path / "multi"
    assert cli.main(["fit", "two_moons", "--steps", "2", "--T", "2", "--train-T", "2", "3",
                     "--no-baseline", "--out", str(out), *TINY]) == 0
    assert load_checkpoint(out / "model.pt")["meta"]["model"]["train_steps"] == [2, 3]
    capsys.readouterr()
    for T, note in (("3", False), ("4", True)):
        assert cli.main(["sample", str(out / "model.pt"), "--n", "20", "--T", T,
                         "--out", str(tmp_path / f"s{T}.npy")]) == 0
        assert np.load(tmp_path / f"s{T}.npy").shape == (20, 2)
        assert ("note: the model was trained with T in [2, 3]" in capsys.readouterr().err) == note
    err = usage_error(capsys, ["fit", "rings", "--train-T", "4", "0", "--out", str(tmp_path)])
    assert "steps must be an integer >= 1" in err


def test_fit_trains_on_the_bound_with_train_particles(tmp_path, capsys):
    out = tmp_path / "iw"
    assert cli.main(["fit", "two_moons", "--steps", "2", "--train-particles", "3",
                     "--out", str(out), *TINY]) == 0
    for name in ("model.pt", "baseline.pt"):  # the Gaussian baseline trains the same way
        assert load_checkpoint(out / name)["meta"]["model"]["train_particles"] == 3
    err = usage_error(capsys, ["fit", "rings", "--train-particles", "0", "--out", str(tmp_path)])
    assert "--train-particles" in err


def conditional_data(folder, n=60, seed=0):
    """``x`` ``(n, 2)`` near the first two features of contexts ``c`` ``(n, 3)``, and labels."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n, 3))
    x = c[:, :2] + 0.1 * rng.normal(size=(n, 2))
    paths = {name: folder / f"{name}.npy" for name in ("x", "c", "labels")}
    np.save(paths["x"], x)
    np.save(paths["c"], c.astype(np.float32))
    np.save(paths["labels"], (c[:, 0] > 0).astype(np.int64))
    return paths


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """A tiny fit of x given context vectors c, rows paired."""
    folder = tmp_path_factory.mktemp("conditional")
    paths = conditional_data(folder)
    out = folder / "run"
    assert cli.main(["fit", str(paths["x"]), "--context", str(paths["c"]), "--steps", "2",
                     "--out", str(out), *TINY]) == 0
    return paths, out


def test_fit_with_a_context_array(conditional):
    paths, out = conditional
    state = load_checkpoint(out / "model.pt")
    assert state["meta"]["model"]["context"] == 3 and state["meta"]["model"]["classes"] is None
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["condition"] == {"context": 3} and metrics["config"]["context"] == str(
        paths["c"])
    row = metrics["models"]["ntm"]
    assert row["eval_size"] == 12
    assert all(math.isfinite(row[k]) for k in ("nll", "energy_distance"))
    assert (out / "samples.png").stat().st_size > 0


def test_sample_given_one_context_or_one_per_sample(conditional, tmp_path, capsys):
    paths, out = conditional
    model = str(out / "model.pt")
    np.save(tmp_path / "one.npy", np.array([[0.5, -1.0, 2.0]], dtype=np.float32))
    np.save(tmp_path / "seven.npy", np.random.default_rng(1).normal(size=(7, 3)))
    drawn = {}
    for name, option in (("given", ["--given", "0.5,-1,2", "--n", "5"]),
                         ("one", ["--context", str(tmp_path / "one.npy"), "--n", "5"]),
                         ("seven", ["--context", str(tmp_path / "seven.npy")])):
        assert cli.main(["sample", model, *option, "--out", str(tmp_path / f"x_{name}.npy")]) == 0
        drawn[name] = np.load(tmp_path / f"x_{name}.npy")
    assert drawn["given"].shape == (5, 2) and np.isfinite(drawn["given"]).all()
    assert np.array_equal(drawn["given"], drawn["one"])  # one condition, repeated
    assert drawn["seven"].shape == (7, 2)  # one sample per row of --context
    err = usage_error(capsys, ["sample", model, "--context", str(tmp_path / "seven.npy"),
                               "--n", "5"])
    assert "has 7 rows" in err and "--n 7" in err
    assert "pass --context FILE (N, C) or --given" in usage_error(capsys, ["sample", model])
    err = usage_error(capsys, ["sample", model, "--given", "1,2"])
    assert "(*batch, 3), got shape (2,)" in err
    assert "numbers separated by commas" in usage_error(capsys, ["sample", model, "--given", "a"])
    err = usage_error(capsys, ["sample", model, "--labels", str(paths["labels"])])
    assert "gives labels but the model takes context vectors" in err


def test_evaluate_with_held_out_contexts(conditional, tmp_path, capsys):
    paths, out = conditional
    held = conditional_data(tmp_path, n=20, seed=3)
    report = tmp_path / "m.json"
    assert cli.main(["evaluate", str(out / "model.pt"), str(held["x"]), "--context",
                     str(held["c"]), "--particles", "2", "--samples", "40", "--out",
                     str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["eval_size"] == 20 and math.isfinite(result["nll"])
    capsys.readouterr()
    err = usage_error(capsys, ["evaluate", str(out / "model.pt"), str(held["x"])])
    assert "conditioned on context vectors (*batch, 3)" in err
    err = usage_error(capsys, ["evaluate", str(out / "model.pt"), str(held["x"]), "--context",
                               str(paths["c"])])
    assert "has 60 rows but the data has 20" in err


@pytest.mark.parametrize("context, message", [
    (np.zeros((50, 3)), "has 50 rows but the data has 60"),
    (np.zeros((60,)), "shape (N, D)"),
    (np.concatenate([np.zeros((59, 3)), [[0.0, np.nan, 0.0]]]), "NaN"),
])
def test_bad_context_arrays_are_usage_errors(tmp_path, capsys, context, message):
    paths = conditional_data(tmp_path)
    np.save(tmp_path / "bad.npy", context)
    err = usage_error(capsys, ["fit", str(paths["x"]), "--context", str(tmp_path / "bad.npy"),
                               "--steps", "1", "--out", str(tmp_path / "o"), *TINY])
    assert message in err and "--context" in err and "Traceback" not in err


def test_conditions_need_a_npy_file_and_a_conditional_model(run, tmp_path, capsys):
    paths = conditional_data(tmp_path)
    err = usage_error(capsys, ["fit", "checkerboard", "--context", str(paths["c"])])
    assert "a built-in toy has none" in err
    err = usage_error(capsys, ["sample", str(run / "model.pt"), "--given", "0.5"])
    assert "the model is unconditional" in err
    err = usage_error(capsys, ["fit", str(paths["x"]), "--context", str(paths["c"]),
                               "--labels", str(paths["labels"])])
    assert "not allowed with argument" in err


def test_fit_and_sample_with_labels(tmp_path, capsys):
    paths = conditional_data(tmp_path)
    out = tmp_path / "labelled"
    assert cli.main(["fit", str(paths["x"]), "--labels", str(paths["labels"]), "--steps", "2",
                     "--out", str(out), *TINY]) == 0
    assert load_checkpoint(out / "model.pt")["meta"]["model"]["classes"] == 2
    assert cli.main(["sample", str(out / "model.pt"), "--given", "1", "--n", "6",
                     "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (6, 2)
    err = usage_error(capsys, ["sample", str(out / "model.pt"), "--given", "1.5"])
    assert "one class label (an integer)" in err
    assert "in 0..1" in usage_error(capsys, ["sample", str(out / "model.pt"), "--given", "7"])
    np.save(tmp_path / "floats.npy", np.zeros(60))
    err = usage_error(capsys, ["fit", str(paths["x"]), "--labels", str(tmp_path / "floats.npy")])
    assert "expected integer labels" in err
