"""Property tests (Hypothesis) for the transporter ``f(x, t)``: a stack of bijector blocks
conditioned on the level time, the identity at ``t = 1``.

Transporters are drawn among the default (masked autoregressive, affine or spline), a mix of
ntmdist, zuko and nflows blocks, and TarFlow blocks over tokens, with every network parameter
perturbed by N(0, scale^2), ``scale`` in ``[0.1, 0.5]``. Times are drawn in ``[0, 1]`` with
``t = 1`` drawn often. Tolerances follow the error model of ``_bijectors.py``.
"""

import itertools
import math
from typing import NamedTuple

import torch
import zuko
from _bijectors import (
    DTYPES,
    SCALES,
    SEEDS,
    K,
    check_bijector,
    eps,
    examples,
    perturbed,
    randn,
    within,
)
from _models import seeded
from hypothesis import example, given
from hypothesis import strategies as st
from nflows.transforms import MaskedAffineAutoregressiveTransform

import ntmdist as nd
from ntmdist.transforms import AffineCoupling, CausalTransformerAffine, Permutation

KINDS = ["affine", "spline", "mixed", "tokens"]


class Spec(NamedTuple):
    """A drawn transporter: its kind, event shape and time-embedding size."""

    kind: str
    event: tuple[int, ...]
    embedding: int


@st.composite
def specs(draw, kinds: list[str] = KINDS) -> Spec:
    kind = draw(st.sampled_from(kinds))
    event = (draw(st.integers(1, 4)), draw(st.integers(1, 2))) if kind == "tokens" else (
        draw(st.integers(1, 6)),)
    return Spec(kind, event, draw(st.sampled_from([2, 4, 8])))


def _transporter(spec: Spec) -> nd.Transporter:
    e, d = spec.embedding, spec.event[0]
    if spec.kind in ("affine", "spline"):
        return nd.Transporter.default(d, univariate=spec.kind, embedding=e, hidden=(16, 16),
                                      bins=4, bound=4.0)
    if spec.kind == "mixed":  # zuko and nflows blocks go through as_lazy
        blocks = [AffineCoupling(d, e, hidden=(8,)), Permutation(d),
                  zuko.flows.MaskedAutoregressiveTransform(d, e, hidden_features=(8,)),
                  MaskedAffineAutoregressiveTransform(d, 8, context_features=e, num_blocks=1)]
        return nd.Transporter(blocks, embedding=e)
    blocks = [CausalTransformerAffine(*spec.event, context=e, width=8, depth=1, reverse=r)
              for r in (False, True)]
    return nd.Transporter(blocks, embedding=e, event_dim=2)


def build(spec: Spec, seed: int, scale: float, dtype: torch.dtype) -> nd.Transporter:
    return perturbed(lambda: _transporter(spec), seed, scale, dtype)


@st.composite
def times(draw, batch: tuple[int, ...]) -> list[float]:
    """``prod(batch)`` times in [0, 1], ``t = 1`` (the top level) drawn often."""
    t = st.one_of(st.just(1.0), st.floats(0.0, 1.0))
    return draw(st.lists(t, min_size=math.prod(batch), max_size=math.prod(batch)))


BATCH_AND_TIMES = st.sampled_from([(), (3,), (3, 4), (2, 3, 4)]).flatmap(
    lambda b: st.tuples(st.just(b), times(b))
)



@examples(len(KINDS))
@given(spec=specs(), seed=SEEDS, scale=SCALES, dtype=DTYPES, batch_t=BATCH_AND_TIMES)
@example(spec=Spec("affine", (1,), 2), seed=0, scale=0.5, dtype=torch.float32,
         batch_t=((), [0.9999999999999999]))
def test_identity_at_the_top_level_only(spec, seed, scale, dtype, batch_t):
    batch, t = batch_t
    t = torch.tensor(t, dtype=dtype).reshape(batch)
    transporter = build(spec, seed, scale, dtype)
    f = transporter(t)
    x = randn((*batch, *spec.event), seed, dtype)
    top = t == 1  # in the dtype: 1 - 1e-16 rounds to 1 in float32
    u, ladj = f.call_and_ladj(x)
    assert u.shape == x.shape and ladj.shape == batch
    x_back, ladj_back = f.inverse_and_ladj(x)
    for out, log in ((u, ladj), (x_back, ladj_back)):
        assert torch.equal(out[top], x[top]) and torch.equal(log[top], torch.zeros_like(log[top]))
    # below the top the perturbed map is not the identity: it moves some of 8 probe points
    below = t[~top]
    if below.numel():
        probe = randn((below.numel(), 8, *spec.event), seed + 3, dtype, 0.5)
        moved = transporter(below[:, None].expand(-1, 8))(probe) - probe
        size = K * eps(dtype) * (1 + probe.abs().amax())
        assert torch.all(moved.abs().flatten(1).amax(-1) > size)


@examples(2 * len(KINDS))
@given(spec=specs(), seed=SEEDS, scale=SCALES, dtype=DTYPES, xscale=st.floats(0.1, 2.0),
       batch_t=st.sampled_from([(), (3,)]).flatmap(lambda b: st.tuples(st.just(b), times(b))))
def test_round_trip_and_ladj(spec, seed, scale, dtype, xscale, batch_t):
    batch, t = batch_t
    transporter = build(spec, seed, scale, dtype)
    check_bijector(transporter, torch.tensor(t, dtype=dtype).reshape(batch), spec.event, batch,
                   seed, dtype, xscale)


@examples(3 * len(KINDS))
@given(spec=specs(["affine", "spline", "tokens"]), seed=SEEDS, dtype=DTYPES,
       batch_t=BATCH_AND_TIMES)
def test_zero_initialised_transporter_is_the_identity(spec, seed, dtype, batch_t):
    batch, t = batch_t
    with seeded(seed):
        f = _transporter(spec).to(dtype)(torch.tensor(t, dtype=dtype).reshape(batch))
    x = randn((*batch, *spec.event), seed, dtype, 2.0)
    e = eps(dtype) * torch.ones(())
    for out, ladj in (f.call_and_ladj(x), f.inverse_and_ladj(x)):
        if spec.kind == "spline":  # the knots are computed: the identity up to rounding
            within((out - x).abs(), e * (4.0 + x.abs()))  # 4: the spline bound
            within(ladj.abs(), e)
        else:  # zero shift and log-scale
            assert torch.equal(out, x) and torch.equal(ladj, torch.zeros_like(ladj))


@given(batch_t=BATCH_AND_TIMES, seed=SEEDS, dtype=DTYPES)
def test_no_blocks_is_the_identity(batch_t, seed, dtype):
    batch, t = batch_t
    transporter = nd.Transporter()
    assert transporter.is_identity
    f = transporter(torch.tensor(t, dtype=dtype).reshape(batch))
    x = randn((*batch, 3), seed, dtype)
    for out, ladj in (f.call_and_ladj(x), f.inverse_and_ladj(x)):
        assert torch.equal(out, x) and torch.equal(ladj, torch.zeros(batch, dtype=dtype))


@examples(len(KINDS))
@given(spec=specs(), seed=SEEDS, scale=SCALES, dtype=DTYPES,
       batch_t=st.sampled_from([(3,), (2, 3)]).flatmap(lambda b: st.tuples(st.just(b), times(b))))
def test_each_example_uses_its_own_time(spec, seed, scale, dtype, batch_t):
    """Example ``i`` of a batch with times ``t`` is example ``i`` of the same batch with every
    time set to ``t_i``, exactly (the same shapes run the same kernels)."""
    batch, t = batch_t
    transporter = build(spec, seed, scale, dtype)
    t = torch.tensor(t, dtype=dtype).reshape(batch)
    x = randn((*batch, *spec.event), seed, dtype)
    f = transporter(t)
    u, ladj = f.call_and_ladj(x)
    x_back, ladj_back = f.inverse_and_ladj(x)
    for index in itertools.product(*map(range, batch)):
        f_i = transporter(torch.full(batch, t[index].item(), dtype=dtype))
        u_i, ladj_i = f_i.call_and_ladj(x)
        assert torch.equal(u_i[index], u[index]) and torch.equal(ladj_i[index], ladj[index])
        x_i, ladj_i = f_i.inverse_and_ladj(x)
        assert torch.equal(x_i[index], x_back[index])
        assert torch.equal(ladj_i[index], ladj_back[index])


@examples(len(KINDS))
@given(spec=specs(), seed=SEEDS, scale=SCALES, dtype=DTYPES, t=st.floats(0.0, 0.49),
       gap=st.floats(0.01, 0.5))
def test_the_map_depends_on_time(spec, seed, scale, dtype, t, gap):
    transporter = build(spec, seed, scale, dtype)
    x = randn((4, *spec.event), seed, dtype)
    u0 = transporter(torch.tensor(t, dtype=dtype))(x)
    u1 = transporter(torch.tensor(t + gap, dtype=dtype))(x)
    assert not torch.allclose(u0, u1, rtol=0, atol=K * eps(dtype) * (1 + x.abs().amax().item()))


@examples(len(KINDS))
@given(spec=specs(), seed=SEEDS, scale=SCALES, dtype=DTYPES, t=st.floats(0.0, 1.0),
       n=st.integers(1, 4))
def test_times_broadcast_against_inputs(spec, seed, scale, dtype, t, n):
    transporter = build(spec, seed, scale, dtype)
    x = randn((n, *spec.event), seed, dtype)
    one = transporter(torch.tensor(t, dtype=dtype))
    many = transporter(torch.full((n,), t, dtype=dtype))
    u, ladj = one.call_and_ladj(x)
    assert u.shape == x.shape and ladj.shape == (n,)
    # the same numbers (zuko rounds a broadcast context differently from an expanded one)
    e, d = eps(dtype), math.prod(spec.event)
    u_many, ladj_many = many.call_and_ladj(x)
    within((u - u_many).abs(), e * (1 + u.abs().amax()))
    within((ladj - ladj_many).abs(), e * (d + ladj.abs().amax()))
    # one example, many times: the output takes the batch of the times
    u_one_x, ladj_one_x = many.call_and_ladj(x[0])
    assert u_one_x.shape == x.shape and ladj_one_x.shape == (n,)
    within((u_one_x - u[:1]).abs(), e * (1 + u.abs().amax()))
    within((ladj_one_x - ladj[:1]).abs(), e * (d + ladj.abs().amax()))
