import math

import numpy as np
import pytest
import torch
from scipy import stats

from ntmdist import data
from ntmdist.metrics import bits_per_dim

EXACT = ["checkerboard", "eight_gaussians", "pinwheel", "rings"]
ALL = sorted(data.TOYS)

# Midpoint grid on [-6, 6]^2: 600 x 600 cells of side 0.02, grouped into 24 x 24 bins of side 0.5
# (bin edges fall on the checkerboard's cell edges).
BOX, CELLS, PER_BIN = 6.0, 600, 25


def _grid() -> tuple[torch.Tensor, float]:
    h = 2 * BOX / CELLS
    centres = -BOX + h * (torch.arange(CELLS, dtype=torch.float64) + 0.5)
    return torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1), h


def _bin_probabilities(density: torch.Tensor, h: float) -> torch.Tensor:
    bins = CELLS // PER_BIN
    return (density * h**2).reshape(bins, PER_BIN, bins, PER_BIN).sum(dim=(1, 3))


def _chi_square_pvalue(x: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square of the histogram of x against bin probabilities (rest pooled)."""
    bins = probs.shape[0]
    idx = torch.floor((x.double() + BOX) / (2 * BOX / bins)).long()
    inside = ((idx >= 0) & (idx < bins)).all(dim=-1)
    counts = torch.zeros(bins, bins, dtype=torch.float64)
    counts.index_put_((idx[inside, 0], idx[inside, 1]), torch.ones(int(inside.sum())),
                      accumulate=True)
    n = len(x)
    expected, observed = n * probs.flatten(), counts.flatten()
    keep = expected >= 5
    exp_kept = torch.cat([expected[keep], (n - expected[keep].sum()).reshape(1)])
    obs_kept = torch.cat([observed[keep], (n - observed[keep].sum()).reshape(1)])
    stat = float(((obs_kept - exp_kept) ** 2 / exp_kept).sum())
    return float(stats.chi2.sf(stat, df=len(exp_kept) - 1))


def _interval_probs(lo, width, sd, edges):
    """P(lo + width U + sd Z in each bin) for U ~ U[0, 1), Z ~ N(0, 1): shape (K, bins).

    Uses int_a^b Phi(t) dt = G(b) - G(a) with G(t) = t Phi(t) + phi(t) (width > 0)."""
    t = (edges[None, :] - lo[:, None]) / sd
    if width == 0:
        cdf = torch.special.ndtr(t)
    else:

        def g(z):
            return z * torch.special.ndtr(z) + torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)

        cdf = sd / width * (g(t) - g(t - width / sd))
    return cdf[:, 1:] - cdf[:, :-1]


def _mixture_bin_probs(lo, width, sd, weights):
    """Bin probabilities of a mixture of product laws (per axis: uniform interval + Gaussian)."""
    edges = torch.linspace(-BOX, BOX, CELLS // PER_BIN + 1, dtype=torch.float64)
    px = _interval_probs(lo[:, 0], width, sd, edges)
    py = _interval_probs(lo[:, 1], width, sd, edges)
    return torch.einsum("k,ki,kj->ij", weights, px, py)


def _two_moons_bin_probs():
    """Independent reference for two_moons: a midpoint rule over the angle."""
    theta = math.pi * (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    c, s = torch.cos(theta), torch.sin(theta)
    shift = torch.tensor([1.0, 0.2], dtype=torch.float64)
    centres = torch.cat([torch.stack([c, s], -1), torch.stack([1 - c, 0.5 - s], -1)]) * 2 - shift
    weights = torch.full((len(centres),), 1 / len(centres), dtype=torch.float64)
    return _mixture_bin_probs(centres, 0.0, 0.2, weights)


def _spirals_bin_probs():
    """Independent reference for spirals: a = 3 pi sqrt(v) has density 2a / (3 pi)^2."""
    nodes, top = 8000, 3 * math.pi
    a = top * (torch.arange(nodes, dtype=torch.float64) + 0.5) / nodes
    w = 2 * a / top**2 * (top / nodes)
    arm = torch.stack([-a * torch.cos(a), a * torch.sin(a)], -1)
    lo = torch.cat([arm, -arm - 0.5]) / 3  # sign +: arm + [0, 1/2)^2; sign -: -(arm + [0, 1/2)^2)
    return _mixture_bin_probs(lo, 0.5 / 3, 0.1, torch.cat([w, w]) / 2)


REFERENCE = {"two_moons": _two_moons_bin_probs, "spirals": _spirals_bin_probs}


@pytest.mark.parametrize("name", EXACT)
def test_log_prob_integrates_to_one(name):
    points, h = _grid()
    density = data.toy(name).log_prob(points).exp()
    assert abs(float(density.sum()) * h**2 - 1) < 1e-6


@pytest.mark.parametrize("name", EXACT)
def test_samples_fit_exact_density(name):
    points, h = _grid()
    toy = data.toy(name)
    density = toy.log_prob(points).exp()
    x = toy.sample(20_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert _chi_square_pvalue(x, _bin_probabilities(density, h)) > 1e-3
    # first and second moments against the quadrature, within 5 standard errors
    flat, w = points.reshape(-1, 2), (density * h**2).reshape(-1)
    feats = [lambda z: z[:, 0], lambda z: z[:, 1], lambda z: z[:, 0] * z[:, 1],
             lambda z: z[:, 0] ** 2, lambda z: z[:, 1] ** 2]
    for f in feats:
        values = f(x)
        error = abs(float(values.mean()) - float((f(flat) * w).sum()))
        assert error < 5 * float(values.std()) / math.sqrt(len(x))


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_samples_fit_reference_density(name):
    probs = REFERENCE[name]()
    assert abs(float(probs.sum()) - 1) < 1e-4  # the reference is normalised (up to the box)
    x = data.toy(name).sample(20_000, generator=torch.Generator().manual_seed(1))
    assert _chi_square_pvalue(x, probs) > 1e-3


def test_two_moons_mean():
    x = data.two_moons(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.tensor([0.0, 0.3])  # 2 * (1/2, 1/4) - (1, 0.2)
    assert bool(((x.mean(0) - expected).abs() < 5 * x.std(0) / math.sqrt(len(x))).all())


def test_checkerboard_entropy_and_support():
    x = data.checkerboard(50_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert bool(data.checkerboard_support(x).all())
    entropy = -data.checkerboard_log_prob(x).mean()
    assert math.isclose(float(entropy), math.log(32), rel_tol=1e-12)
    assert math.isclose(math.log(32), 3.4657359, rel_tol=1e-7)
    # every black square is hit about equally often
    cells = torch.floor((x + 4) / 2).long()
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).reshape(4, 4)
    black = (torch.arange(4)[:, None] + torch.arange(4)) % 2 == 0
    assert bool((counts[~black] == 0).all())
    assert stats.chisquare(counts[black].numpy()).pvalue > 1e-3
    # white squares and the outside have density zero
    off = torch.tensor([[-1.0, -3.0], [3.0, -3.0], [4.5, 0.5], [-5.0, -3.0]])
    assert not bool(data.checkerboard_support(off).any())
    assert bool(torch.isneginf(data.checkerboard_log_prob(off)).all())


def test_eight_gaussians_matches_torch_mixture():
    angle = torch.arange(8) * math.pi / 4
    centres = 2 * math.sqrt(2) * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(8)),
        torch.distributions.Independent(torch.distributions.Normal(centres, math.sqrt(2) / 4), 1),
    )
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.allclose(data.eight_gaussians_log_prob(x), mix.log_prob(x))


def test_rings_bessel_formula_matches_angle_quadrature():
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) * 2
    phi = 2 * math.pi * torch.arange(4096) / 4096
    circle = torch.stack([torch.cos(phi), torch.sin(phi)], -1)
    density = 0.0
    for r in (3.0, 2.25, 1.5, 0.75):
        d2 = ((x[:, None] - r * circle) ** 2).sum(-1)
        density = density + (torch.exp(-0.5 * d2 / 0.08**2) / (2 * math.pi * 0.08**2)).mean(-1) / 4
    lp = data.rings_log_prob(x)
    mask = density > 1e-250
    assert torch.allclose(lp[mask], density[mask].log(), rtol=1e-10, atol=1e-10)


def test_spirals_moments():
    x = data.spirals(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    e_a2 = 9 * math.pi**2 / 2
    e_acos, e_asin = -4 / (3 * math.pi), 2 * (9 * math.pi**2 - 4) / (9 * math.pi**2)
    e_arm2 = e_a2 + 2 * 0.25 * (-e_acos + e_asin) + 2 / 12
    r2 = (x**2).sum(-1)
    assert abs(float(r2.mean()) - (e_arm2 / 9 + 0.02)) < 5 * float(r2.std()) / math.sqrt(len(x))
    assert bool((x.mean(0).abs() < 5 * x.std(0) / math.sqrt(len(x))).all())


@pytest.mark.parametrize("name", ALL)
def test_samplers_seeded_shapes_and_extent(name):
    toy = data.toy(name)
    assert toy.name == name
    a = toy.sample(1000, generator=torch.Generator().manual_seed(3))
    b = toy.sample(1000, generator=torch.Generator().manual_seed(3))
    c = toy.sample(1000, generator=torch.Generator().manual_seed(4))
    assert a.shape == (1000, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    x64 = toy.sample(1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert x64.dtype == torch.float64 and torch.allclose(x64.float(), a)
    torch.manual_seed(5)
    d = toy.sample(10)
    torch.manual_seed(5)
    assert torch.equal(d, toy.sample(10))
    assert float((a.abs() <= 4.5).all(-1).double().mean()) > 0.99
    assert toy.sample(0).shape == (0, 2)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            toy.sample(bad)


@pytest.mark.parametrize("name", EXACT)
def test_log_prob_shapes_and_validation(name):
    lp = data.toy(name).log_prob
    assert lp(torch.zeros(3, 4, 2)).shape == (3, 4)
    assert lp(torch.zeros(2, dtype=torch.float32)).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(\*, 2\)"):
        lp(torch.zeros(5, 3))
    with pytest.raises(ValueError):
        lp(torch.zeros(5, 2, dtype=torch.long))


def test_registry_and_unknown_name():
    assert {n for n, t in data.TOYS.items() if t.log_prob is not None} == set(EXACT)
    assert data.toy("checkerboard").support is data.checkerboard_support
    with pytest.raises(ValueError, match="checkerboard.*spirals"):
        data.toy("swiss_roll")


def test_digits_shape_range_and_scaling():
    from sklearn.datasets import load_digits

    pixels = torch.as_tensor(load_digits().images)[:, None]
    x, y = data.digits(generator=torch.Generator().manual_seed(0))
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    assert -1 <= float(x.min()) and float(x.max()) < 1
    # x = 2 (q + u) / 17 - 1 with u ~ U[0, 1) independent of the pixel value q
    u = (x.double() + 1) * 17 / 2 - pixels
    assert -1e-5 < float(u.min()) and float(u.max()) < 1 + 1e-5
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3
    assert stats.kstest(u[pixels == 16].numpy(), "uniform").pvalue > 1e-3
    x2, _ = data.digits(generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    centres, _ = data.digits(dequantize=False, dtype=torch.float64)
    assert torch.allclose(centres, 2 * (pixels + 0.5) / 17 - 1)
    # the log-scale constant is log |dx/dq| of that map
    q = torch.tensor(3.0, requires_grad=True)
    (2 * (q + 0.5) / 17 - 1).backward()
    assert math.isclose(data.DIGITS_LOG_SCALE, math.log(float(q.grad)))
    # a uniform density on [-1, 1]^64 is the uniform law over 17 levels: log2(17) bits/dim
    assert math.isclose(bits_per_dim(math.log(2), data.DIGITS_LOG_SCALE), math.log2(17))


def test_image_patches():
    from sklearn.datasets import load_sample_images

    photos = torch.stack([torch.tensor(im).permute(2, 0, 1) for im in load_sample_images().images])
    x = data.image_patches(5, 16, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 5, 5) and x.dtype == torch.float32
    assert -1 < float(x.min()) and float(x.max()) < 1
    assert torch.equal(x, data.image_patches(5, 16, generator=torch.Generator().manual_seed(0)))
    clean = data.image_patches(3, 4, generator=torch.Generator().manual_seed(1), dequantize=False,
                               dtype=torch.float64)
    q = (clean + 1) * 256 / 2 - 0.5
    assert torch.allclose(q, q.round())
    windows = photos.unfold(2, 3, 1).unfold(3, 3, 1)  # (2, 3, H-2, W-2, 3, 3)
    for patch in q.round().to(torch.uint8):
        match = (windows == patch[None, :, None, None]).all(-1).all(-1).all(1)
        assert bool(match.any())
    assert math.isclose(data.PATCH_LOG_SCALE, math.log(2 / 256))
    for bad in (0, 428, 2.0):
        with pytest.raises(ValueError, match="size"):
            data.image_patches(bad, 2)


def test_no_global_dtype_change():
    before = torch.get_default_dtype()
    data.checkerboard(3)
    data.digits()
    assert torch.get_default_dtype() == before
    assert np.isfinite(data.rings_log_prob(torch.zeros(1, 2)).numpy()).all()
