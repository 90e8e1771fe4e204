"""The fit loop: convergence, exact resume, atomic checkpoints, data conventions, EMA, DDP."""

import math
import os
import socket
import warnings

import pytest
import torch
from _ddp_worker import worker
from _models import stop_at, tiny
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import ntmdist as nd
from ntmdist.training import FitResult, fit, lr_factor
from ntmdist.training import checkpoint as ckpt


class Toy(nn.Module):
    """One parameter vector ``w``; loss ``mean((x - w)^2)``; records what it was given."""

    def __init__(self, features=2):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(features))
        self.calls, self.weights = [], []

    def loss(self, x, y=None, generator=None):
        self.calls.append((x.clone(), None if y is None else y.clone(), generator))
        self.weights.append(self.w.detach().clone())
        return ((x - self.w) ** 2).mean()


def gaussian(n=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * torch.tensor([1.5, 0.5]) + torch.tensor([1.0, -2.0])


def labelled(n=64, seed=0):
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return x, (x[:, 0] > 0).long()


def test_loss_decreases_and_global_rng_untouched():
    model = tiny(seed=0)
    state = torch.get_rng_state()
    result = fit(model, gaussian(), steps=100, batch_size=128, lr=3e-3, warmup=10, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(result, FitResult) and result.step == 100 and result.elapsed > 0
    loss = result.history["loss"]
    assert len(loss) == 100 and all(math.isfinite(v) for v in loss)
    first, last = sum(loss[:10]) / 10, sum(loss[-10:]) / 10
    # the predictor starts as the exact reverse chain of N(0, I) data (about 4.5 nats/dim);
    # a 2D Gaussian with other moments must still be learned: a full nat per dimension
    assert last < first - 1.0, (first, last)


def test_resume_is_bitwise_exact(tmp_path):
    x = gaussian(256)
    kwargs = dict(steps=6, batch_size=32, warmup=2, seed=5, progress=False)
    straight = fit(tiny(seed=0), x, **kwargs)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(tiny(seed=0), x, checkpoint=path, checkpoint_every=3, callback=stop_at(3), **kwargs)
    assert ckpt.load_checkpoint(path)["step"] == 3
    resumed = fit(tiny(seed=7), x, checkpoint=path, checkpoint_every=3, resume=True, **kwargs)
    assert resumed.step == 6 and resumed.history["loss"] == straight.history["loss"]
    for a, b in [(straight.model, resumed.model), (straight.ema_model, resumed.ema_model)]:
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(v, w), k
    again = fit(tiny(seed=8), x, checkpoint=path, resume=True, **kwargs)
    assert again.step == 6 and again.history["loss"] == straight.history["loss"]


def test_resuming_with_another_horizon_warns_and_continues(tmp_path):
    x, path = gaussian(64), tmp_path / "run.pt"
    kwargs = dict(batch_size=8, warmup=1, checkpoint=path, progress=False)
    fit(tiny(seed=0), x, steps=4, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same horizon resumes silently
        assert fit(tiny(seed=0), x, steps=4, resume=True, **kwargs).step == 4
    jump = rf"\(0 -> {lr_factor(4, 8, 1):.3g} of the peak\)"  # lr_factor(4, 4, 1) == 0
    with pytest.warns(UserWarning, match=rf"run of 4 steps .* resuming for 8 .* {jump}"):
        longer = fit(tiny(seed=0), x, steps=8, resume=True, **kwargs)
    assert longer.step == 8 and len(longer.history["loss"]) == 8
    assert ckpt.load_checkpoint(path)["horizon"] == {"steps": 8, "warmup": 1}


def test_checkpoint_contents(tmp_path):
    model = tiny(seed=0)
    fit(model, gaussian(64), steps=2, batch_size=8, checkpoint=tmp_path / "c.pt", progress=False)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["format"] == ckpt.FORMAT and state["step"] == 2
    assert state["meta"]["ntmdist"] == nd.__version__
    assert state["meta"]["schedule"] == model.schedule.config()
    assert state["rng"]["data"].dtype == torch.uint8 and state["rng"]["data"].shape[0] == 1
    assert set(state) >= {"model", "ema", "optimizer", "scheduler", "history", "elapsed"}
    assert os.listdir(tmp_path) == ["c.pt"]
    fresh = tiny(seed=4)
    ckpt.load_weights(fresh, tmp_path / "c.pt")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                 state["ema"].values(), strict=True))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    ckpt.save_checkpoint(path, {"step": 1})
    real_save = torch.save

    def crash(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"step": 2})
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path / "new.pt", {"step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["run.pt"]
    assert ckpt.load_checkpoint(path)["step"] == 1


def test_bad_checkpoints_raise_value_error_naming_path(tmp_path):
    good = tmp_path / "good.pt"
    fit(Toy(), gaussian(64), steps=1, batch_size=4, checkpoint=good, progress=False)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(3)}, foreign)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"module": nn.Linear(2, 2)}, unsafe)
    for path in (truncated, foreign, unsafe):
        with pytest.raises(ValueError, match=path.name):
            ckpt.load_checkpoint(path)
        with pytest.raises(ValueError, match=path.name):
            fit(Toy(), gaussian(64), steps=2, batch_size=4, checkpoint=path, resume=True,
                progress=False)


class Pairs(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _draw(x, y=None):
    def draw(n, generator):
        idx = torch.randint(len(x), (n,), generator=generator)
        return x[idx] if y is None else (x[idx], y[idx])

    return draw


CONVENTIONS = {
    "tensor": lambda x, y: x,
    "tuple": lambda x, y: (x, y),
    "tensor_dataset": lambda x, y: TensorDataset(x),
    "labelled_tensor_dataset": lambda x, y: TensorDataset(x, y),
    "dataset": lambda x, y: Pairs(x, y),
    "callable": lambda x, y: _draw(x),
    "labelled_callable": lambda x, y: _draw(x, y),
}


@pytest.mark.parametrize("kind", sorted(CONVENTIONS))
def test_data_conventions(kind):
    x, y = labelled()
    model = Toy()
    result = fit(model, CONVENTIONS[kind](x, y), steps=3, batch_size=5, progress=False)
    assert result.step == 3 and len(model.calls) == 3
    has_labels = kind in ("tuple", "labelled_tensor_dataset", "dataset", "labelled_callable")
    for xb, yb, generator in model.calls:
        assert xb.shape == (5, 2) and xb.dtype == torch.float64
        assert isinstance(generator, torch.Generator)
        assert (yb is not None) == has_labels
        if has_labels:  # rows of x and y stay paired
            assert torch.equal(yb, (xb[:, 0] > 0).long())
    assert not torch.equal(model.calls[0][0], model.calls[1][0])


def test_labels_reach_ntm_loss_and_custom_loss_fn():
    x, y = labelled()
    model = nd.NTM((2,), nd.Schedule(2, t_min=0.1), transporter=None, classes=2,
                   predictor=nd.MLPPredictor(2, classes=2, width=16, depth=1))
    seen = []

    def loss_fn(m, xb, yb):  # no generator argument: called with three
        seen.append(yb)
        return m.loss(xb, yb, generator=torch.Generator().manual_seed(0))

    fit(model, (x, y), steps=2, batch_size=8, loss_fn=loss_fn, progress=False)
    assert len(seen) == 2 and all(v.shape == (8,) and v.dtype == torch.long for v in seen)
    fit(model, (x, y), steps=2, batch_size=8, progress=False)


def test_ema_matches_hand_computation():
    model = Toy(features=1)
    decay, steps = 0.9, 20
    result = fit(model, torch.randn(64, 1, generator=torch.Generator().manual_seed(1)) + 3.0,
                 steps=steps, batch_size=4, lr=0.1, warmup=0, grad_clip=None, ema=decay,
                 progress=False)
    weights = [float(w) for w in model.weights] + [model.w.item()]  # w_0 .. w_N
    ema = weights[0]
    for n in range(1, steps + 1):
        d = min(decay, (1 + n) / (10 + n))
        ema = d * ema + (1 - d) * weights[n]
    assert math.isclose(result.ema_model.w.item(), ema, rel_tol=0, abs_tol=1e-12)
    assert abs(result.ema_model.w.item() - model.w.item()) > 1e-3
    assert not result.ema_model.w.requires_grad
    assert result.apply_ema().w.item() == result.ema_model.w.item()


def test_schedule_eval_and_callback():
    logged, evaluated = [], []

    def eval_fn(m):
        evaluated.append(m)
        assert not m.training
        return {"mean": m.w.sum(), "tag": "ok"}

    model = Toy()
    result = fit(model, gaussian(64), steps=5, batch_size=4, lr=0.5, warmup=2, eval_every=2,
                 eval_fn=eval_fn, callback=lambda s, m: logged.append((s, m)), progress=True)
    assert [e["step"] for e in result.history["eval"]] == [2, 4, 5]
    assert all(m is result.ema_model for m in evaluated) and model.training
    assert isinstance(result.history["eval"][0]["mean"], float)
    assert [s for s, _ in logged] == [1, 2, 3, 4, 5] and "mean" in logged[1][1]
    rates = [m["lr"] for _, m in logged]
    assert rates == pytest.approx([0.5 * lr_factor(n, 5, 2) for n in range(5)])
    assert rates[:2] == pytest.approx([0.25, 0.5]) and rates[-1] < rates[2]
    assert lr_factor(99, 100, 10) < 1e-3


@pytest.mark.parametrize("kwargs, error", [
    (dict(resume=True), ValueError),
    (dict(ema=1.0), ValueError),
    (dict(steps=-1), ValueError),
    (dict(data=[1, 2, 3]), TypeError),
    (dict(data=(torch.zeros(3, 2), torch.zeros(4))), ValueError),
    (dict(model=nn.Linear(2, 2)), TypeError),
])
def test_bad_arguments(kwargs, error):
    args = dict(model=Toy(), data=gaussian(8), steps=2, batch_size=2, progress=False) | kwargs
    with pytest.raises(error):
        fit(**args)


def test_non_finite_loss_stops_before_update():
    model = Toy()
    with pytest.raises(FloatingPointError, match="step 1"):
        fit(model, torch.full((4, 2), math.inf), steps=2, batch_size=2, progress=False)
    assert torch.equal(model.w, torch.zeros(2))


@pytest.mark.slow
def test_ddp_two_processes(tmp_path):
    mp = pytest.importorskip("torch.multiprocessing")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert not torch.equal(r0["first_batch"], r1["first_batch"])  # each rank its own batch
    assert r0["loss"] == r1["loss"]  # the logged loss is averaged over ranks
    assert (r0["writes"], r1["writes"]) == (2, 0)  # only rank 0 writes
    for key in r0["final"]:
        assert torch.equal(r0["final"][key], r1["final"][key]), key
        assert torch.equal(r0["ema"][key], r1["ema"][key]), key
        assert torch.equal(r0["resumed"][key], r0["final"][key]), key
        assert torch.equal(r1["resumed"][key], r1["final"][key]), key
    assert any(not torch.equal(r0["init"][k], r0["final"][k]) for k in r0["final"])
    rng = torch.load(tmp_path / "run.pt", weights_only=True)["rng"]
    assert rng["data"].shape[0] == 2 and not torch.equal(rng["data"][0], rng["data"][1])
