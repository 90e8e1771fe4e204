"""Helpers of ``benchmarks/speed.py``: timing, parameter counts, zuko flows of a given size,
peak memory of a training step measured in a fresh process, and markdown tables.

Run as a script it is that child process: it builds one model and its data, resets the peak,
runs one training step (forward, backward, AdamW step: activations, gradients and the optimiser
state) and prints one JSON line. On CPU the peak is the resident-set high-water mark
(``VmHWM`` of ``/proc/self/status``, reset by writing ``5`` to ``/proc/self/clear_refs``; where
that file is missing, the ``ru_maxrss`` of ``getrusage``), minus the resident set before the
step; on CUDA it is ``torch.cuda.max_memory_allocated()`` minus the memory allocated before::

    python benchmarks/_timing.py '{"model": "NTM", "features": 64, "steps": 4, "batch": 1024,
                                   "device": "cpu", "threads": 1}'
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import zuko
from torch import nn

import ntmdist as nd

HERE = Path(__file__).resolve().parent
TRANSFORMS = 5
"""Transforms of the zuko flows; their hidden width is chosen to match a parameter count."""


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(fn: Callable[[], object], device: str, repeats: int, budget: float = 4.0,
            warmup: Callable[[], object] | None = None) -> float:
    """Median wall-clock seconds of ``fn()`` after a warm-up call (of ``warmup`` if given, e.g.
    the same work on a smaller batch); fewer repeats (at least three, or ``repeats`` if smaller)
    when a call is slow, so that a measurement takes about ``budget`` seconds."""
    (fn if warmup is None else warmup)()
    sync(device)
    times: list[float] = []
    while len(times) < repeats:
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
        if len(times) == 1:
            repeats = max(min(repeats, 3), min(repeats, int(budget / max(times[0], 1e-9))))
    return statistics.median(times)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ntm(features: int, steps: int, device: str, step_flow: str | None = "auto",
        passes: int | None = None) -> nd.NTM:
    """The default vector NTM of the benchmark (``t_min = 0.05``), seeded; ``passes`` overrides
    the transporter's number of passes."""
    options = {} if passes is None else {"passes": min(passes, features)}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nd.NTM((features,), nd.Schedule(steps=steps, t_min=0.05), step_flow=step_flow,
                       transporter_options=options)
    return model.to(device)


def zuko_flow(kind: str, features: int, target: int, device: str) -> tuple[nn.Module, int]:
    """A zuko ``NSF`` or ``MAF`` with :data:`TRANSFORMS` transforms and two hidden layers of the
    width (a multiple of 16) whose parameter count is closest to ``target``; and that width."""
    build = {"NSF": zuko.flows.NSF, "MAF": zuko.flows.MAF}[kind]

    def make(units: int) -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return build(features, transforms=TRANSFORMS, hidden_features=(16 * units,) * 2)

    hi = 1
    while count(make(hi)) < target:  # the count grows with the width
        hi *= 2
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:  # bisect for the first width whose count is >= target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(make(mid)) < target else (lo, mid)
    units = min((max(lo - 1, 1), lo), key=lambda u: abs(count(make(u)) - target))
    return make(units).to(device), 16 * units


def train_step(module: nn.Module, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A closure running one AdamW step on ``loss()``."""
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return step


def peak_memory(spec: dict) -> dict:
    """Run :func:`_child` in a fresh interpreter and return its measurement."""
    out = subprocess.run([sys.executable, str(Path(__file__)), json.dumps(spec)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _kib(field: str) -> float | None:
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").open())
        return float(status[field].split()[0])
    except (OSError, KeyError):
        return None


def _cpu_peak(step: Callable[[], None]) -> tuple[float, str]:
    base = _kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        step()
        return (_kib("VmHWM") - base) / 1024, "VmHWM"
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "ru_maxrss"


def _child(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    device, features = spec["device"], spec["features"]
    model = ntm(features, spec["steps"], device)
    x = torch.randn(spec["batch"], features, device=device)
    if spec["model"] == "NTM":
        step = train_step(model, lambda: model.loss(x))
    else:
        model, _ = zuko_flow(spec["model"], features, count(model), device)
        step = train_step(model, lambda: -model().log_prob(x).mean())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return dict(spec, peak_mb=(torch.cuda.max_memory_allocated() - base) / 2**20,
                    method="cuda.max_memory_allocated")
    peak, method = _cpu_peak(step)
    return dict(spec, peak_mb=peak, method=method)


def fmt(v: object, spec: str = ".3g") -> str:
    """``v`` formatted by ``spec``; ``"rate"``: whole numbers from 100, else 3 digits."""
    if v is None:
        return "—"
    if spec == "rate":
        spec = ".0f" if v >= 100 else ".3g"
    return format(v, spec) if isinstance(v, float) else str(v)


def table(title: str, rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """A markdown table: columns ``(header, key, format)`` of ``rows``."""
    lines = [f"### {title}", "", "| " + " | ".join(h for h, _, _ in cols) + " |",
             "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k), s) for _, k, s in cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
