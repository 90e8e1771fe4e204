"""Checkpoints under SIGKILL: a killed ``ntmdist fit`` resumes from its last complete checkpoint
and ends bitwise where an uninterrupted run ends; truncated, foreign and unsafe files are
refused with a clear message; a checkpoint carries what ``ntmdist sample`` needs."""

import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _models import seeded
from _scripts import subprocess_env
from hypothesis import given
from hypothesis import strategies as st

import ntmdist as nd
from ntmdist.cli import load_model
from ntmdist.training import checkpoint as ckpt
from ntmdist.training import fit

ROOT = Path(__file__).resolve().parent.parent
STEPS, EVERY = 300, 3
TINY = ["checkerboard", "--no-baseline", "--width", "16", "--depth", "1", "--transporter-width",
        "8", "--batch-size", "32", "--eval-size", "64", "--samples", "200", "--particles", "4",
        "--no-progress", "--threads", "1", "--seed", "0", "--steps", str(STEPS),
        "--checkpoint-every", str(EVERY)]


def start(*argv: str) -> subprocess.Popen:
    """``python -m ntmdist ...`` from the source tree, in its own process group."""
    env = subprocess_env(OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "ntmdist", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"fit ended before writing {path}: {proc.communicate()[0]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"no checkpoint at {path} after {timeout} s")
        time.sleep(0.005)


def weights(state: dict) -> list[torch.Tensor]:
    """Every tensor that determines how the run continues, in a fixed order."""
    out = [*state["model"].values(), *state["ema"].values()]
    for group in state["optimizer"]["state"].values():
        out += [v for _, v in sorted(group.items()) if torch.is_tensor(v)]
    return out + [state["rng"]["data"], state["rng"]["loss"]]


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_is_bitwise_the_straight_run(tmp_path):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    delay = random.Random(os.getpid()).uniform(0.0, 0.5)
    proc = start("fit", *TINY, "--out", str(killed))
    reference = start("fit", *TINY, "--out", str(straight))  # the uninterrupted run, alongside
    wait_for(killed / "model.pt", proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"fit ended before the kill ({delay:.2f} s)"
    state = ckpt.load_checkpoint(killed / "model.pt")  # the last complete checkpoint: intact
    step = state["step"]
    assert 0 < step < STEPS and step % EVERY == 0, step
    assert len(state["history"]["loss"]) == step
    assert all(torch.isfinite(t).all() for t in weights(state) if t.is_floating_point())
    leftovers = {p.name for p in killed.iterdir()} - {"model.pt"}
    assert all(name.startswith(".model.pt.") and name.endswith(".tmp") for name in leftovers)

    out = finish(start("fit", *TINY, "--out", str(killed), "--resume"))
    assert f"resuming from step {step}" in out
    finish(reference)
    resumed = ckpt.load_checkpoint(killed / "model.pt")
    uninterrupted = ckpt.load_checkpoint(straight / "model.pt")
    assert resumed["step"] == uninterrupted["step"] == STEPS
    assert resumed["history"]["loss"] == uninterrupted["history"]["loss"]
    for a, b in zip(weights(resumed), weights(uninterrupted), strict=True):
        assert torch.equal(a, b)
    assert (killed / "metrics.json").exists() and (killed / "samples.png").exists()

    model, _ = load_model(killed / "model.pt")  # the checkpoint alone rebuilds the model
    assert model.schedule == nd.Schedule(steps=4, t_min=(0.0, 0.05), shift=1.0)  # CLI defaults
    assert torch.isfinite(model.sample(16, generator=torch.Generator().manual_seed(0))).all()


WRITER = """
import sys, torch
from ntmdist.training.checkpoint import save_checkpoint
path, step = sys.argv[1], 0
while True:
    step += 1
    save_checkpoint(path, {"step": step, "payload": torch.full((1 << 18,), float(step))})
    print(step, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_leaves_a_partial_file(tmp_path):
    """Writes back to back (1 MB each), killed at random moments: the file under the
    checkpoint's name is always a complete checkpoint, whatever the moment."""
    path = tmp_path / "run.pt"
    rng = random.Random(os.getpid())
    env = subprocess_env()
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, text=True)
        wait_for(path, proc)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        printed = proc.communicate(timeout=60)[0].split()
        state = ckpt.load_checkpoint(path)
        assert torch.equal(state["payload"], torch.full((1 << 18,), float(state["step"])))
        if printed:  # the last step reported written is there, or the one after it
            assert int(printed[-1]) <= state["step"] <= int(printed[-1]) + 1
    leftovers = {p.name for p in tmp_path.iterdir()} - {"run.pt"}
    assert all(name.startswith(".run.pt.") and name.endswith(".tmp") for name in leftovers)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint of a tiny NTM trained for 2 steps, and the model."""
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    with seeded(0):
        model = nd.NTM((2,), nd.Schedule(3, 0.01, 0.5),
                       predictor_options=dict(width=16, depth=1),
                       transporter_options=dict(hidden=(16, 16)))
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    fit(model, data, steps=2, batch_size=8, checkpoint=path, progress=False, ema=None)
    return path, model


def test_checkpoint_records_version_config_and_schedule(saved):
    path, model = saved
    meta = ckpt.load_checkpoint(path)["meta"]
    assert meta["ntmdist"] == nd.__version__ and meta["model_class"] == "NTM"
    assert meta["model"] == ckpt.plain(model.config())
    assert meta["schedule"] == {"steps": 3, "t_min": 0.01, "shift": 0.5}
    rebuilt, _ = load_model(path)
    traj = model().sample((4,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(rebuilt().log_prob(traj), model().log_prob(traj))


def test_loading_uses_weights_only(saved, monkeypatch):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ckpt.load_checkpoint(saved[0])
    assert calls and all(kw.get("weights_only") is True for kw in calls)


class _Payload:
    """Unpickling this would create ``marker``: arbitrary code run by a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "version": 1, "step": 1, "x": _Payload(marker)}, evil)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"x": _Payload(marker)}, protocol=2))
    for path in (evil, raw):
        with pytest.raises(ValueError, match=path.name):
            ckpt.load_checkpoint(path)
        with pytest.raises(ValueError, match=path.name):
            load_model(path)
    assert not marker.exists()


def test_foreign_and_future_checkpoints_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, foreign)
    with pytest.raises(ValueError, match="not an ntmdist checkpoint"):
        load_model(foreign)
    future = tmp_path / "future.pt"
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION + 1, "step": 1}, future)
    with pytest.raises(ValueError, match="format version"):
        load_model(future)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="truncated, corrupt"):
        load_model(text)


@given(st.floats(0.0, 1.0, exclude_max=True))
def test_truncation_anywhere_is_refused(saved, tmp_path_factory, fraction):
    path = saved[0]
    data = path.read_bytes()
    cut = tmp_path_factory.mktemp("cut") / "cut.pt"
    cut.write_bytes(data[: int(fraction * len(data))])
    with pytest.raises(ValueError, match="cut.pt"):
        load_model(cut)
    shutil.rmtree(cut.parent)
