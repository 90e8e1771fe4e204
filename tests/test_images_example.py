"""``examples/images.py``: two ranks under torchrun (gloo, CPU) end with bitwise equal weights, a
resumed run continues from the saved step, a single process trains on a folder of PNGs, and the
loaders read folders and ``.npy`` arrays or refuse them with a clear message."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _scripts import load_script, subprocess_env
from PIL import Image

from ntmdist.data import DIGITS_LOG_SCALE
from ntmdist.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "images.py"
TINY = ["--batch-size", "16", "--transporter-width", "8", "--transporter-depth", "1",
        "--predictor-width", "8", "--particles", "2", "--eval-size", "20", "--per-class", "2",
        "--no-progress", "--report-weights", "--checkpoint-every", "2", "--device", "cpu"]




images = load_script(EXAMPLE, "images_example")
image_data = sys.modules["image_data"]  # its data helpers, imported by the script


def run(*argv: str, ranks: int | None = None) -> str:
    """The example in a subprocess: plain Python, or ``torch.distributed.run`` with ``ranks``
    processes (``--standalone``: a free local port, so parallel test runs do not collide)."""
    launcher = [sys.executable]
    if ranks is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    env = subprocess_env(OMP_NUM_THREADS="1")
    proc = subprocess.run([*launcher, str(EXAMPLE), *argv], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def reports(out: Path, world: int) -> list[dict]:
    found = [json.loads((out / f"weights_rank{r}.json").read_text()) for r in range(world)]
    assert [r["rank"] for r in found] == list(range(world))
    assert all(r["world_size"] == world for r in found)
    return found


def check_outputs(out: Path, step: int, world: int) -> dict:
    """The PNGs and metrics.json exist; the checkpoint holds the weights every rank reported."""
    for name in ("samples.png", "trajectories.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == step and metrics["world_size"] == world
    assert math.isfinite(metrics["bits_per_dim"]) and metrics["bits_per_dim"] > 0
    state = load_checkpoint(out / "model.pt")
    assert state["step"] == step and len(state["history"]["loss"]) == step
    assert state["meta"]["world_size"] == world
    for report in reports(out, world):
        assert report["step"] == step
        assert report["model"] == images.digest(state["model"])
        assert report["ema"] == images.digest(state["ema"])
    return state


@pytest.mark.slow
def test_torchrun_two_ranks_agree_and_resume_continues(tmp_path):
    out = tmp_path / "ddp"
    printed = run("--steps", "4", "--out", str(out), *TINY, ranks=2)
    assert "2 process(es) on cpu" in printed and "bits/dim" in printed
    first = check_outputs(out, step=4, world=2)  # ranks drew other batches: equal only by DDP
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == 10 and metrics["log_scale_per_dim"] == DIGITS_LOG_SCALE

    printed = run("--steps", "6", "--resume", "--out", str(out), *TINY, ranks=2)
    assert f"resuming from step 4 of {out / 'model.pt'}" in printed
    resumed = check_outputs(out, step=6, world=2)
    assert resumed["history"]["loss"][:4] == first["history"]["loss"]  # continued, not restarted
    assert resumed["elapsed"] > first["elapsed"]


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.mark.slow
def test_single_process_on_a_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        for i in range(6):
            write_png(tmp_path / "data" / name / f"{i}.png",
                      rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    out = tmp_path / "run"
    printed = run("--data", str(tmp_path / "data"), "--steps", "2", "--out", str(out), *TINY)
    assert "1 process(es)" in printed
    check_outputs(out, step=2, world=1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["event_shape"] == [3, 8, 8] and metrics["classes"] == 2
    assert metrics["log_scale_per_dim"] == pytest.approx(math.log(2 / 256))


def test_transformer_predictor_with_bf16_and_compile(tmp_path):
    """The transformer predictor trains through the bf16 autocast and ``torch.compile`` paths
    (CPU; the ``eager`` backend captures the graphs without generating code)."""
    out = tmp_path / "dit"
    printed = run("--predictor", "transformer", "--bf16", "--compile", "eager", "--steps", "2",
                  "--out", str(out), *TINY)
    assert "bf16 True, transformer predictor" in printed
    state = check_outputs(out, step=2, world=1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["predictor"] == "transformer" and metrics["compile"] == "eager"
    assert metrics["bf16"] and metrics["predictor_parameters"] > 0
    assert any(k.startswith("predictor.blocks.") for k in state["model"])
    config = state["meta"]["model"]  # a named predictor: the resume check sees its options
    assert config["predictor"] == "transformer" and config["predictor_options"]["depth"] == 5


def test_folder_reading(tmp_path):
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, (8, 6), dtype=np.uint8) for _ in range(3)]
    for i, p in enumerate(pixels):
        write_png(tmp_path / "grey" / f"{i}.png", p)
    grey = image_data.read_folder(tmp_path / "grey")
    assert grey.values.shape == (3, 1, 8, 6) and grey.values.dtype == torch.uint8
    assert torch.equal(grey.values[:, 0], torch.from_numpy(np.stack(pixels)))
    assert grey.labels is None and grey.levels == 256  # no sub-folders: unconditional
    write_png(tmp_path / "grey" / "wide.png", rng.integers(0, 256, (8, 7), dtype=np.uint8))
    with pytest.raises(ValueError, match="wide.png.*same size"):
        image_data.read_folder(tmp_path / "grey")


def test_arrays_and_scaling(tmp_path):
    q = np.random.default_rng(2).integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", q)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 1, 0]))
    data = image_data.read_array(tmp_path / "pixels.npy", tmp_path / "y.npy")
    assert data.levels == 256 and data.classes == 3 and data.labels.dtype == torch.int64
    x = data.scaled(torch.arange(5), torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.abs().max() < 1
    u = (x.double() + 1) * 128 - torch.from_numpy(q)  # the dequantisation noise, in [0, 1]
    assert u.min() > -1e-4 and u.max() < 1 + 1e-4 and u.std() > 0.2
    np.save(tmp_path / "unit.npy", q / 128.0 - 1)
    real = image_data.read_array(tmp_path / "unit.npy")
    assert real.levels is None and real.log_scale == 0.0
    digits = images.load_images("digits", None, 0, seed=0)
    assert digits.values.max() == 16 and digits.log_scale == DIGITS_LOG_SCALE


@pytest.mark.parametrize("array, labels, message", [
    (np.full((2, 1, 4, 4), 2.0), None, r"in \[-1, 1\]"),
    (np.zeros((2, 4, 4), np.uint8), None, r"\(N, C, H, W\)"),
    (np.zeros((2, 1, 4, 4), np.int32), None, "dtype int32"),
    (np.zeros((2, 1, 4, 4), np.uint8), np.zeros(3, np.int64), r"labels.*\(2,\)"),
])
def test_bad_arrays_are_refused(tmp_path, array, labels, message):
    np.save(tmp_path / "x.npy", array)
    if labels is not None:
        np.save(tmp_path / "y.npy", labels)
    with pytest.raises(ValueError, match=message):
        image_data.read_array(tmp_path / "x.npy", None if labels is None else tmp_path / "y.npy")


def test_unknown_data_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        images.main(["--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "unknown data" in capsys.readouterr().err
