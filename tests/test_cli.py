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
