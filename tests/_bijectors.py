"""The checks of a bijector against float64 autograd, shared by ``test_transforms.py`` (blocks)
and ``test_transporter.py`` (transporters), and the helpers that draw and build them.

Tolerances come from a first-order error model, in units of the dtype's ``eps``, with norms
and gradients computed by float64 autograd at the example (:func:`reference`): a forward
evaluation errs by ``(1 + |y|) + |J| (1 + |x|)`` (rounding of the output and of the input) plus
``max_o sum_p |p dy_o/dp|`` (rounding inside the network, as relative perturbations of its
parameters); an inverse multiplies that by ``|J^{-1}|``; the ladj errs by
``n + |ladj| + sum_p |p d ladj/dp| + sum_i |x_i d ladj/dx_i|``, and the float64 reference
``log|det J|`` errs by ``n kappa eps`` plus its own rounding, bounded by its distance to the
float64 log-det of the inverse's Jacobian at ``f(x)`` (where a quotient rule cancels, as in a
spline of slope 1e-6, the autograd Jacobian loses digits the fused ladj keeps). Every check is
``error <= K * bound`` with one head-room ``K`` for all blocks and both dtypes (over a few
thousand examples the largest ``error / bound`` seen is 17, the first ``@example`` of
``test_round_trip_and_ladj``: an nflows spline with slopes ~1e-6; most are below 1).
"""

import copy
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from _models import perturb, seeded
from hypothesis import settings
from hypothesis import strategies as st

from ntmdist.transforms import call_and_ladj, inverse

K = 64
SCALES = st.floats(0.1, 0.5)
SEEDS = st.integers(0, 2**31 - 1)
DTYPES = st.sampled_from([torch.float32, torch.float64])


def examples(n: int) -> settings:
    """``n`` times the profile's number of examples (``n``: the kinds of things drawn)."""
    return settings(max_examples=n * settings().max_examples)


def perturbed(make: Callable[[], torch.nn.Module], seed: int, scale: float,
              dtype: torch.dtype) -> torch.nn.Module:
    """``make()`` initialised from ``seed``, its parameters perturbed by N(0, scale^2), in
    ``dtype``."""
    with seeded(seed):
        module = make()
    perturb(module, scale, seed)
    return module.to(dtype)



def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def randn(shape: tuple[int, ...], seed: int, dtype: torch.dtype, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def jacobians(fn, x: torch.Tensor, event_dim: int) -> torch.Tensor:
    """Per-example Jacobians ``(*batch, n, n)`` of ``fn`` (events flattened to ``n``), by autograd.

    Examples are independent, so the Jacobian of the batch sum holds every example's Jacobian.
    """
    batch, n = x.shape[: x.dim() - event_dim], math.prod(x.shape[x.dim() - event_dim :])
    jac = torch.autograd.functional.jacobian(lambda v: fn(v).reshape(-1, n).sum(0), x)
    return jac.reshape(n, -1, n).movedim(1, 0).reshape(*batch, n, n)


def inf_norm(v: torch.Tensor, event_dim: int) -> torch.Tensor:
    return v.abs().flatten(v.dim() - event_dim).amax(-1).double()


def within(err: torch.Tensor, bound: torch.Tensor) -> None:
    """``err <= K * bound`` everywhere; the message gives the worst ``err / bound``."""
    assert torch.all(err <= K * bound), f"err / bound = {(err / bound).max().item():.3g} > {K}"


class Reference(NamedTuple):
    """float64 facts at a point, one per example (see :func:`reference`)."""

    logdet: torch.Tensor
    norm: torch.Tensor
    inv_norm: torch.Tensor
    out_sens: torch.Tensor
    ladj_sens: torch.Tensor
    ladj_slope: torch.Tensor
    logdet_noise: torch.Tensor


def _inverse_logdet(f, x64: torch.Tensor, event_dim: int) -> torch.Tensor:
    """``-log|det J_{f^{-1}}(f(x))|`` by float64 autograd: a second reference for
    ``log|det J_f(x)|`` through another formula. Its distance to the first bounds the rounding
    the float64 references carry: where a formula cancels (the quotient rule of a spline of
    slope 1e-6), the autograd Jacobian loses digits that ``slogdet``'s ``n kappa eps`` does not
    count, while the fused ladj keeps them (checked against 60-digit mpmath for nflows'
    spline)."""
    y64 = f(x64).detach()
    return -torch.linalg.slogdet(jacobians(f.inv, y64, event_dim))[1]


def _sensitivity(v: torch.Tensor, x: torch.Tensor, params: list) -> tuple[float, float, float]:
    """``(sum_p |p dv/dp|, sum_i |x_i dv/dx_i|, sum_i |dv/dx_i|)`` of a scalar ``v``."""
    if not v.requires_grad:
        return 0.0, 0.0, 0.0
    gx, *gp = torch.autograd.grad(v, [x, *params], retain_graph=True, materialize_grads=True)
    rel = sum(((p * g).abs().sum().item() for p, g in zip(params, gp, strict=True)), 0.0)
    return rel, (x * gx).abs().sum().item(), gx.abs().sum().item()


def reference(block64: torch.nn.Module, c64, x: torch.Tensor, event_dim: int) -> Reference:
    """At ``x``, in float64 and per example: ``log|det J|``; ``|J|`` and ``|J^{-1}|`` (2-norms);
    the sensitivity of the output to relative perturbations of the parameters,
    ``max_o sum_p |p dy_o/dp|``; that of the ladj to relative perturbations of the parameters
    and of ``x``; ``|d ladj / dx|_1``; and the reference's own rounding, bounded by the distance
    to the log-det of the inverse's Jacobian (:func:`_inverse_logdet`)."""
    f = block64(c64)
    x64 = x.detach().to(torch.float64, copy=True)
    jac = jacobians(f, x64, event_dim)
    sign, logdet = torch.linalg.slogdet(jac)
    assert torch.all(sign != 0)
    batch, n = jac.shape[:-2], jac.shape[-1]
    params = list(block64.parameters())
    y, ladj = f.call_and_ladj(x64.requires_grad_())
    y, ladj = y.reshape(-1, n), ladj.reshape(-1)
    rows = []
    for b in range(len(ladj)):
        out = max(_sensitivity(y[b, o], x64, params)[0] for o in range(n))
        rel, rel_x, slope = _sensitivity(ladj[b], x64, params)
        rows.append((out, rel + rel_x, slope))
    out_sens, ladj_sens, slope = torch.tensor(rows).reshape(*batch, 3).unbind(-1)
    noise = (_inverse_logdet(f, x64.detach(), event_dim) - logdet).abs()
    return Reference(logdet, torch.linalg.matrix_norm(jac, ord=2),
                     1 / torch.linalg.svdvals(jac)[..., -1], out_sens, ladj_sens, slope,
                     noise)


def check_bijector(block, c, event, batch, seed, dtype, xscale) -> None:
    """Round trips, ladj against the float64 autograd Jacobian, the inverse's ladj and the
    inverse transform, for ``block(c)`` on inputs ``(*batch, *event)`` of scale ``xscale``."""
    event_dim, n = len(event), math.prod(event)
    f = block(c)
    block64, c64 = copy.deepcopy(block).double(), None if c is None else c.double()
    e, e64 = eps(dtype), eps(torch.float64)

    def rounding(ref: Reference, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Error of a forward evaluation in units of eps: output, input and network rounding."""
        xnorm, ynorm = inf_norm(x, event_dim), inf_norm(y, event_dim)
        return (1 + ynorm) + ref.norm * (1 + xnorm) + ref.out_sens

    # fused forward: output equals __call__, ladj equals log|det J| of the float64 Jacobian
    x = randn((*batch, *event), seed, dtype, xscale)
    ref = reference(block64, c64, x, event_dim)
    y, ladj = f.call_and_ladj(x)
    assert y.dtype == ladj.dtype == dtype
    assert y.shape == x.shape and ladj.shape == batch
    assert torch.equal(f(x), y)
    kappa = ref.norm * ref.inv_norm
    tol_ladj = e * (n + ref.logdet.abs() + ref.ladj_sens) + e64 * n * kappa + ref.logdet_noise
    within((ladj.double() - ref.logdet).abs(), tol_ladj)

    # x -> y -> x; the inverse returns the forward ladj at the point it returns
    x_back, ladj_back = f.inverse_and_ladj(y)
    assert x_back.shape == x.shape and ladj_back.shape == batch
    xnorm = inf_norm(x, event_dim)
    within(inf_norm(x_back - x, event_dim), e * ((1 + xnorm) + ref.inv_norm * rounding(ref, x, y)))
    ladj_at_back = f.call_and_ladj(x_back)[1]
    tol_back = tol_ladj + e * ref.ladj_slope * (1 + xnorm)
    within((ladj_back.double() - ladj_at_back.double()).abs(), tol_back)

    # the inverse transform: the same point, the negated ladj (through the cache and without)
    inv = f.inv
    x_inv = inv(y)
    assert torch.equal(x_inv, x_back)
    assert torch.equal(inverse(f, y), x_back)  # the samplers' path, without the ladj
    assert torch.equal(inv.log_abs_det_jacobian(y, x_inv), -ladj_back)
    x_fused, minus = call_and_ladj(inv, y, event_dim)
    assert torch.equal(x_fused, x_back) and torch.equal(minus, -ladj_back)
    assert torch.equal(f.log_abs_det_jacobian(x, y), ladj)

    # y -> x -> y for a y not made by the forward map
    y = randn((*batch, *event), seed + 2, dtype, xscale)
    x_hat = f.inv(y)
    ref = reference(block64, c64, x_hat, event_dim)
    kappa = ref.norm * ref.inv_norm
    within(inf_norm(f(x_hat) - y, event_dim), e * (1 + kappa) * rounding(ref, x_hat, y))
