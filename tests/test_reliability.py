"""Reliability (docs/reliability.md): malformed input gets a documented error (``TypeError`` or
``ValueError``) and valid input a finite, correctly shaped answer; numerical extremes; dtype and
device moves."""

import copy
import functools
import math

import pytest
import torch
from _models import perturb, seeded, small_model
from hypothesis import event, example, given
from hypothesis import strategies as st

import ntmdist as nd
from ntmdist.validation import magnitude_limit, validating

DTYPES = [torch.float32, torch.float64]


@functools.cache
def tiny(steps: int = 4, classes: int | None = None, dtype: torch.dtype = torch.float64,
         t_min: float = 0.0, shift: float = 0.0) -> nd.NTM:
    """A tiny NTM with perturbed weights (no block is the identity). Cached: tests only read it."""
    with seeded(steps):
        model = nd.NTM((2,), nd.Schedule(steps, t_min, shift), classes=classes,
                       predictor=nd.MLPPredictor(2, classes=classes, width=16, depth=1),
                       transporter_options=dict(hidden=(16, 16)))
    perturb(model, 0.3, seed=steps)
    return model.to(dtype).requires_grad_(False)


def finite(out: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    assert out.shape == torch.Size(shape), (out.shape, shape)
    assert out.dtype == dtype
    assert torch.isfinite(out).all(), out


# -- the malformed-input suite ------------------------------------------------------------------

KINDS = ["model"] * 12 + ["other_float", "float16", "int64", "bool", "complex64", "list"]
MAGNITUDES = [0.0, 1e-30, 1.0, 1.0, 1e2, 1e4, 1e4, 1e8, 1e12, 1e30, 1e100]


@st.composite
def values(draw: st.DrawFn, shape: tuple[int, ...], bad_shapes: list[tuple[int, ...]],
           dtype: torch.dtype) -> tuple[object, set]:
    """An input meant to have ``shape`` and the model's ``dtype``, possibly malformed (shape,
    dtype, device, NaN, inf, magnitude), and the documented errors it may raise (none: valid)."""
    errors: set = set()
    if draw(st.integers(0, 5)) == 0:
        shape, errors = draw(st.sampled_from(bad_shapes)), {ValueError}
    shape_errors = set(errors)
    kind = draw(st.sampled_from(KINDS))
    special = draw(st.sampled_from([None] * 9 + [math.nan, math.inf, -math.inf]))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    x = x * draw(st.sampled_from(MAGNITUDES))
    if special is not None and x.numel():
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = special
    if kind == "model":
        x = x.to(dtype)  # beyond the dtype's range: inf
        if x.numel() and validating() and not (x.abs() <= magnitude_limit(dtype)).all():
            errors.add(ValueError)  # NaN, inf, or beyond the scored range
    elif kind in ("other_float", "float16"):
        other = torch.float64 if dtype == torch.float32 else torch.float32
        x, errors = x.to(torch.float16 if kind == "float16" else other), errors | {TypeError}
    elif kind == "list":
        x, errors = x.tolist(), errors | {TypeError}
    else:
        x, errors = torch.zeros(shape, dtype=getattr(torch, kind)), errors | {TypeError}
    if torch.is_tensor(x) and draw(st.integers(0, 15)) == 0:  # stands in for another device
        x = torch.empty(x.shape, dtype=x.dtype, device="meta")  # values cannot be read
        errors = shape_errors | {TypeError}
    return x, errors


def check(call, errors: set, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """``call()`` raises one of ``errors`` when there are any, else returns a finite tensor of
    ``shape``: never NaN, never an internal error from deep inside."""
    event("raises" if errors else "valid")
    if errors:
        with pytest.raises(tuple(errors)):
            call()
    else:
        finite(call(), shape, dtype)


@given(st.data())
def test_distribution_api_on_drawn_input(data):
    steps = data.draw(st.sampled_from([1, 2, 4]), "steps")
    model = tiny(steps, dtype=data.draw(st.sampled_from(DTYPES), "dtype"))
    dtype = next(model.parameters()).dtype
    batch = tuple(data.draw(st.lists(st.integers(0, 3), max_size=2), "batch"))
    api = data.draw(st.sampled_from(["log_prob", "score", "denoise", "condition"]), "api")
    dist = model()
    if api == "condition":
        bad = [(*batch, 3), (*batch, 1), ()]
        x, errors = data.draw(values((*batch, 2), bad, dtype), "x_t")
        step = dist.steps[data.draw(st.integers(0, steps - 1))]
        x_s = torch.zeros(2, dtype=dtype)
        check(lambda: step.condition(x).log_prob(x_s), errors, batch, dtype)
        return
    bad = [(*batch, steps + 2, 2), (*batch, steps, 2), (*batch, steps + 1, 3), (2,), ()]
    x, errors = data.draw(values((*batch, steps + 1, 2), bad, dtype), "trajectory")
    if api == "log_prob":
        check(lambda: dist.log_prob(x), errors, batch, dtype)
    elif api == "score":
        check(lambda: dist.score(x), errors, (*batch, steps + 1, 2), dtype)
    else:
        check(lambda: dist.denoise(x), errors, (*batch, 2), dtype)


LABELS = {"none": lambda n: None, "ok": lambda n: torch.arange(n) % 4,
          "high": lambda n: torch.full((n,), 4), "negative": lambda n: torch.full((n,), -1),
          "float": lambda n: torch.zeros(n), "shape": lambda n: torch.zeros(n + 1).long()}


@given(st.data())
def test_model_api_on_drawn_input(data):
    """``loss`` takes data ``(n, 2)``; the bounds take any batch shape, none included (issue
    23): ``(2,)``, ``(n, 2)`` or ``(2, n, 2)``, with labels ``(n,)`` that must broadcast to it."""
    classes = data.draw(st.sampled_from([None, 3]), "classes")
    model = tiny(data.draw(st.sampled_from([1, 4]), "steps"), classes,
                 data.draw(st.sampled_from(DTYPES), "dtype"))
    dtype = next(model.parameters()).dtype
    n = data.draw(st.integers(0, 3), "n")
    api = data.draw(st.sampled_from(["loss", "elbo", "iwae"]), "api")
    batch = (n,) if api == "loss" else data.draw(st.sampled_from([(n,), (n,), (), (2, n)]))
    bad = [(n, 3), (n, 2, 3), ()] + ([(2,)] if api == "loss" else [])
    x, errors = data.draw(values((*batch, 2), bad, dtype), "data")
    usual = ["none"] * 12 if classes is None else ["none", "ok"] * 6
    label = data.draw(st.sampled_from(usual + sorted(LABELS)), "labels")
    y = LABELS[label](n)
    if y is not None:
        if classes is None or (label == "shape" and n) or (n and label in ("high", "negative")):
            errors = errors | {ValueError}
        if batch == ():  # labels (n,) do not broadcast to a single event
            errors = errors | {ValueError}
        if label == "float" and classes is not None:
            errors = errors | {TypeError}
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), "seed"))
    if api == "loss":
        errors = errors | ({ValueError} if n == 0 else set())
        check(lambda: model.loss(x, y, generator=g), errors, (), dtype)
        return
    particles = data.draw(st.sampled_from([1, 3, 3, 3, 3, 3, 0, -1, 2.5]), "particles")
    if isinstance(particles, float):
        errors = errors | {TypeError}
    elif particles < 1:
        errors = errors | {ValueError}
    bound = getattr(model, api)
    check(lambda: bound(x, y, particles=particles, generator=g), errors, batch, dtype)


@given(st.data())
def test_forward_sampling_on_drawn_input(data):
    schedule = tiny(4).schedule  # no networks: any floating dtype, device, magnitude will do
    dtype = data.draw(st.sampled_from(DTYPES), "dtype")
    n = data.draw(st.integers(0, 3), "n")
    x, errors = data.draw(values((n, 2), [()], dtype), "x0")
    if torch.is_tensor(x) and x.is_floating_point():  # any magnitude: nothing is squared
        errors = {ValueError} if x.dim() == 0 else set()
        if x.device.type == "cpu" and validating() and not torch.isfinite(x).all():
            errors.add(ValueError)
    grid_kind = data.draw(st.sampled_from(["none", "ok", "descending", "outside", "length"]))
    grid = {"none": None, "ok": torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]),
            "descending": torch.tensor([0.0, 0.5, 0.4, 0.9, 1.0]),
            "outside": torch.tensor([-0.1, 0.1, 0.5, 0.9, 1.0]),
            "length": torch.tensor([0.0, 0.5, 1.0])}[grid_kind]
    meta = torch.is_tensor(x) and x.is_meta
    if grid_kind == "length" or (grid_kind in ("descending", "outside") and not meta):
        errors = errors | {ValueError}  # values on the meta device cannot be read
    generator = data.draw(st.sampled_from(["none", "cpu", "int"]), "generator")
    generator = {"none": None, "cpu": torch.Generator().manual_seed(0), "int": 0}[generator]
    if generator == 0:
        errors = errors | {TypeError}
    if meta and not errors:
        assert schedule.sample(x, generator=generator, grid=grid).shape == (n, 5, 2)
        return
    out_dtype = x.dtype if torch.is_tensor(x) else dtype
    check(lambda: schedule.sample(x, generator=generator, grid=grid), errors, (n, 5, 2),
          out_dtype)


@given(
    steps=st.one_of(st.integers(-2, 20), st.sampled_from([2.5, True, "4", None])),
    t_min=st.one_of(st.floats(-0.5, 1.5), st.tuples(st.floats(-0.1, 1), st.floats(-0.1, 1)),
                    st.sampled_from([math.nan, math.inf, "a", None, (0.0,), (0.0, 0.1, 0.2)])),
    shift=st.one_of(st.floats(-800, 800), st.sampled_from([math.nan, -math.inf, "x"])),
)
@example(steps=4, t_min=0.0, shift=-700.0)  # t_1 = 1e-305: t_1 ** 2 underflows
@example(steps=4, t_min=0.0, shift=40.0)  # t_3 rounds to 1
def test_schedule_arguments(steps, t_min, shift):
    """Any argument either gives a usable grid or a ValueError (the Schedule's one error)."""
    try:
        sched = nd.Schedule(steps, t_min, shift)
    except ValueError:
        return
    grid = sched.grid
    assert grid.shape == (steps + 1,) and grid[-1] == 1 and grid[0] >= 0
    assert (grid.diff() > 0).all() and grid[1] ** 2 > 0
    for k in range(1, steps + 1):
        assert all(torch.isfinite(c).all() for c in (*sched.kernel(k), *sched.posterior(k)))
    assert torch.isfinite(sched.covariance()).all()
    finite(sched.sample(torch.zeros(3, 2)), (3, steps + 1, 2), torch.float64)


# -- numerical extremes ------------------------------------------------------------------------


def patterns(magnitude: float, dtype: torch.dtype) -> list[torch.Tensor]:
    """Trajectories ``(8, 5, 3)`` at ``magnitude``: every coordinate, one coordinate (the rest
    inside the splines' range), random signs and sizes."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, 3, generator=g, dtype=torch.float64)
    one = x.clone()
    one[..., 0] = magnitude
    mixed = (x * magnitude).clamp(-magnitude, magnitude)
    return [(x.sign() * magnitude).to(dtype), one.to(dtype), mixed.to(dtype)]


@pytest.mark.parametrize("step_flow", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_prob_finite_up_to_1e4_and_the_scored_limit(dtype, step_flow):
    model = small_model(features=3, steps=4, t_min=0.0, step_flow=step_flow, scale=1.0).to(dtype)
    dist = model()
    for magnitude in (1e4, magnitude_limit(dtype)):
        for x in patterns(magnitude, dtype):
            finite(dist.log_prob(x), (8,), dtype)
            finite(dist.score(x), (8, 5, 3), dtype)
            finite(dist.denoise(x), (8, 3), dtype)
    beyond = patterns(2 * magnitude_limit(dtype), dtype)[1]
    with pytest.raises(ValueError, match="beyond"):
        dist.log_prob(beyond)
    unchecked = nd.TrajectoryDistribution(dist.transporter, dist.predictor, dist.grid, (3,),
                                          validate_args=False)
    nan = torch.full((5, 3), math.nan, dtype=dtype)
    assert torch.isnan(unchecked.log_prob(nan))  # validation off: no check, no guarantee


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps,t_min,shift", [(1, 0.0, 0.0), (16, 0.0, 0.0), (4, 0.0, 12.0),
                                               (4, (0.0, 0.05), 0.0), (16, 0.02, 3.0)])
def test_extreme_grids_and_batch_sizes(steps, t_min, shift, dtype):
    """T = 1 and 16, t_min = 0 or drawn, t_(T-1) within 2e-6 of 1; batches of 0 and 1."""
    model = tiny(steps, dtype=dtype, t_min=t_min, shift=shift)
    g = torch.Generator().manual_seed(0)
    dist = model()
    for n in (0, 1, 3):
        traj = dist.sample((n,), generator=g)
        finite(traj, (n, steps + 1, 2), dtype)
        finite(dist.log_prob(traj), (n,), dtype)
        finite(dist.score(traj), (n, steps + 1, 2), dtype)
        finite(dist.denoise(traj), (n, 2), dtype)
        finite(dist.steps[0].condition(traj[:, 1]).log_prob(traj[:, 0]), (n,), dtype)
        finite(model.sample(n, generator=g), (n, 2), dtype)
        finite(model.elbo(traj[:, 0], particles=2, generator=g), (n,), dtype)
        finite(model.iwae(traj[:, 0], particles=3, generator=g), (n,), dtype)
        if n:
            finite(model.loss(traj[:, 0], generator=g), (), dtype)
    with pytest.raises(ValueError, match="at least one example"):
        model.loss(torch.zeros(0, 2, dtype=dtype))


def test_grid_that_collapses_in_float32_is_refused():
    grid = torch.tensor([0.0, 0.5, 1 - 1e-9, 1.0], dtype=torch.float64)
    finite(tiny(3)(grid=grid).sample((2,)), (2, 4, 2), torch.float64)
    with pytest.raises(ValueError, match="strictly ascending in torch.float32"):
        tiny(3, dtype=torch.float32)(grid=grid)
    with pytest.raises(ValueError, match="t_1 >="):
        tiny(3)(grid=torch.tensor([0.0, 1e-160, 0.5, 1.0]))


@pytest.mark.parametrize("step_flow", [False, True])
def test_float32_matches_float64(step_flow):
    """Same weights (float32 values), same trajectories: the answers agree to float32
    precision. Operating range: weights perturbed by 0.1 (at 0.3 the splines get so steep
    that rounding the input by one float32 ulp moves a float64 log_prob by 1e4 ulps)."""
    eps = torch.finfo(torch.float32).eps
    m32 = small_model(features=3, steps=4, t_min=0.0, step_flow=step_flow, scale=0.1).float()
    m64 = copy.deepcopy(m32).double()
    traj = m64().sample((256,), generator=torch.Generator().manual_seed(0)).float()
    lp32, lp64 = m32().log_prob(traj).double(), m64().log_prob(traj.double())
    assert ((lp32 - lp64).abs() / (1 + lp64.abs())).max() < 100 * eps
    s32, s64 = m32().score(traj).double(), m64().score(traj.double())
    assert ((s32 - s64).norm(dim=(-2, -1)) / s64.norm(dim=(-2, -1))).max() < 1000 * eps
    d32, d64 = m32().denoise(traj).double(), m64().denoise(traj.double())
    assert ((d32 - d64).abs() / (1 + d64.abs())).max() < 1000 * eps
    f32 = m32.schedule.log_prob_forward(traj, 1).double()
    assert torch.allclose(f32, m64.schedule.log_prob_forward(traj.double(), 1), rtol=100 * eps)


# -- dtype and device moves --------------------------------------------------------------------


def fresh(classes: int | None = None) -> nd.NTM:
    """An uncached tiny model (``.to`` moves a module in place)."""
    with seeded(0):
        return nd.NTM((2,), nd.Schedule(4, 0.0), classes=classes, step_flow="auto",
                      predictor=nd.MLPPredictor(2, classes=classes, width=16, depth=1,
                                                step_context=64),
                      transporter_options=dict(hidden=(16, 16)))


def tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def test_to_dtype_carries_schedule_and_every_buffer():
    model = fresh()
    schedule, config = model.schedule, model.config()
    kinds = {id(t): t.dtype for t in tensors(model) if not t.is_floating_point()}
    for dtype in (torch.float32, torch.float64, torch.float32):
        assert model.to(dtype) is model
        assert all(t.dtype == dtype for t in tensors(model) if t.is_floating_point())
        assert {id(t): t.dtype for t in tensors(model) if not t.is_floating_point()} == kinds
        assert model.schedule is schedule and model.config() == config
        dist = model()
        assert dist.grid.dtype == dtype and torch.equal(dist.grid, schedule.grid.to(dtype))
        traj = dist.sample((3,), generator=torch.Generator().manual_seed(0))
        assert traj.dtype == dtype
        finite(dist.log_prob(traj), (3,), dtype)
        finite(model.loss(traj[:, 0]), (), dtype)
        other = torch.float64 if dtype == torch.float32 else torch.float32
        with pytest.raises(TypeError, match=f"{other}.*{dtype}"):
            dist.log_prob(traj.to(other))


def test_mixing_devices_raises_naming_both():
    """``meta`` stands in for a GPU on machines without one."""
    model = fresh(classes=3)
    dist = model()
    x = torch.zeros(4, 2, device="meta")
    traj = torch.zeros(4, 5, 2, device="meta")
    calls = [lambda: dist.log_prob(traj), lambda: dist.score(traj), lambda: dist.denoise(traj),
             lambda: dist.steps[0].condition(x), lambda: model.loss(x),
             lambda: model.elbo(x), lambda: model.iwae(x, particles=2)]
    for call in calls:
        with pytest.raises(TypeError, match="device meta but the model is on cpu"):
            call()


def test_model_on_meta_infers_shapes():
    model = fresh().to("meta")
    dist = model()
    assert dist.grid.is_meta
    assert dist.log_prob(torch.empty(3, 5, 2, device="meta")).shape == (3,)
    with pytest.raises(TypeError, match="device cpu but the model is on meta"):
        dist.log_prob(torch.zeros(3, 5, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_moves_and_matches_cpu():
    cpu = fresh(classes=3).double()
    gpu = copy.deepcopy(cpu).to("cuda")
    assert all(t.is_cuda for t in tensors(gpu))
    assert gpu().grid.is_cuda and gpu.schedule is not None
    y = torch.tensor([0, 1, 3])
    traj = cpu(y).sample(generator=torch.Generator().manual_seed(0))
    lp = gpu(y.cuda()).log_prob(traj.cuda())
    assert torch.allclose(lp.cpu(), cpu(y).log_prob(traj), rtol=1e-9, atol=1e-9)
    a = cpu.sample(5, y=1, generator=torch.Generator().manual_seed(1))
    b = gpu.sample(5, y=1, generator=torch.Generator().manual_seed(1))  # noise drawn on the CPU
    assert b.is_cuda and torch.allclose(a, b.cpu(), atol=1e-8)
    gpu.loss(traj[:, 0].cuda(), y.cuda()).backward()
    with pytest.raises(TypeError, match="device cpu but the model is on cuda"):
        gpu(y.cuda()).log_prob(traj)
    with pytest.raises(TypeError, match="CPU torch.Generator"):
        gpu.sample(2, generator=torch.Generator(device="cuda"))
    assert all(t.device.type == "cpu" for t in tensors(gpu.cpu()))


# -- labels, options, command line -------------------------------------------------------------


def test_labels_are_checked_on_every_model_path():
    model = tiny(2, classes=3)
    x = torch.zeros(2, 2)
    for bad in (4, -1, [0, 5]):
        with pytest.raises(ValueError, match=r"class labels must be in 0\.\.2"):
            model(torch.as_tensor(bad))
    with pytest.raises(ValueError, match="class labels"):
        model.loss(x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="class labels"):
        model.sample(2, y=7)
    with pytest.raises(ValueError, match="one label or 2 labels"):
        model.sample(2, y=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="do not match the data batch"):
        model.elbo(x, torch.tensor([0, 1, 2]))
    for wrong in (torch.tensor([0.0, 1.0]), torch.tensor([True, False])):
        with pytest.raises(TypeError, match="integer tensor"):
            model.loss(x, wrong)
    finite(model.loss(x, torch.tensor([0, 3])), (), torch.float64)  # 3: the null label
    with pytest.raises(ValueError, match="unconditional"):
        tiny(2).loss(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="guidance must be a finite number >= 0"):
        model.sample(2, y=1, guidance=-1.0)


def test_unknown_option_names_and_bad_arguments():
    with pytest.raises(TypeError, match="bogus"):
        nd.NTM((2,), predictor_options={"bogus": 1})
    with pytest.raises(TypeError, match="bogus"):
        nd.NTM((2,), transporter_options={"bogus": 1})
    with pytest.raises(TypeError, match="bogus"):
        nd.NTM((2,), step_flow_options={"bogus": 1})
    with pytest.raises(ValueError, match="default per-step bijector"):
        nd.NTM((2,), transporter=None, step_flow_options={"bins": 4})
    with pytest.raises(TypeError, match="tuple of integers"):
        nd.NTM(2)
    with pytest.raises(TypeError, match="Schedule"):
        tiny(2)(schedule="uniform")
    with pytest.raises(TypeError, match="n must be an integer"):
        tiny(2).sample(2.0)
    with pytest.raises(ValueError, match="sample_shape"):
        tiny(2)().sample((-1,))


@pytest.mark.parametrize("argv,message", [
    (["fit", "no_such_toy"], "unknown data 'no_such_toy'"),
    (["fit", "rings", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["no_such_command"], "invalid choice: 'no_such_command'"),
    (["fit", "rings", "--step-flow", "bogus"], "invalid choice: 'bogus'"),
    (["fit", "rings", "--t-min", "1.5"], "t_min must satisfy"),
    (["fit", "rings", "--steps", "-3"], "expected an integer >= 1"),
])
def test_command_line_rejects_unknown_names(argv, message, capsys):
    from ntmdist import cli

    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "Traceback" not in err


def test_configs_record_the_default_splines_and_old_configs_rebuild_theirs():
    """A config names the default vector splines, so a checkpoint rebuilds the networks it was
    trained with after the defaults change; configs written before they were recorded (8 bins on
    [-5, 5] for the transporter and the per-step bijector) rebuild those."""
    model = nd.NTM((3,), step_flow_options={"bins": 4, "bound": 2.0})
    config = model.config()
    bins, step = nd.defaults.vector_splines(3)
    assert config["transporter_options"]["bins"] == bins == 16  # D <= 8: the finer splines
    assert config["step_flow_options"] == {**step, "bins": 4, "bound": 2.0, "passes": 2}
    wide = nd.NTM((9,)).config()
    assert wide["transporter_options"]["bins"] == 8
    assert wide["step_flow_options"] == {**nd.defaults.vector_splines(9)[1], "passes": 2}
    assert (wide["step_flow_options"]["bins"], wide["step_flow_options"]["bound"]) == (8, 5.0)
    assert nd.NTM((3,), step_flow_options={"passes": 3}).step_flow.hyper.passes == 3
    assert (model.step_flow.bins, model.step_flow.bound) == (4, 2.0)
    nd.NTM.from_config(config).load_state_dict(model.state_dict())  # strict: same shapes
    old = nd.NTM((3,), transporter_options={"bins": 8}, step_flow_options={"bins": 8,
                                                                           "bound": 5.0})
    legacy = old.config()
    del legacy["step_flow_options"], legacy["transporter_options"]["bins"]
    rebuilt = nd.NTM.from_config(legacy)
    rebuilt.load_state_dict(old.state_dict())
    assert (rebuilt.step_flow.bins, rebuilt.step_flow.bound) == (8, 5.0)
    assert [b.bins for b in rebuilt.transporter.blocks] == [8, 8]
    assert nd.NTM((3,)).config()["step_flow_options"]["bins"] != 8  # the legacy case is distinct
