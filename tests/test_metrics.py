import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ntmdist import data
from ntmdist.metrics import (
    bits_per_dim,
    energy_distance,
    fraction_on_support,
    frechet_distance,
    kid,
    nats_per_dim,
    precision_recall,
    sample_quality,
)


def _naive_energy(x, y, unbiased):
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    dxy = (x[:, None] - y[None]).norm(dim=-1).mean()
    dxx = (x[:, None] - x[None]).norm(dim=-1).sum()
    dyy = (y[:, None] - y[None]).norm(dim=-1).sum()
    n, m = len(x), len(y)
    if unbiased:
        return float(2 * dxy - dxx / (n * (n - 1)) - dyy / (m * (m - 1)))
    return float(2 * dxy - dxx / n**2 - dyy / m**2)


def _energy_1d_gaussians(delta):
    """Closed form for N(0, 1) against N(delta, 1): E|Z| for Z ~ N(mu, s^2) is
    s sqrt(2/pi) exp(-mu^2 / 2 s^2) + mu (1 - 2 Phi(-mu / s))."""

    def mean_abs(mu, s):
        return s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * (
            1 - 2 * norm.cdf(-mu / s)
        )

    s = math.sqrt(2)
    return 2 * mean_abs(delta, s) - 2 * mean_abs(0.0, s)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("chunk", [None, 1, 7, 1000])
def test_energy_chunked_equals_naive(unbiased, chunk):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, generator=g), torch.randn(200, 3, generator=g) + 0.3
    expected = _naive_energy(x, y, unbiased)
    assert math.isclose(energy_distance(x, y, unbiased, chunk), expected, rel_tol=1e-9)


def test_energy_event_shapes_and_numpy():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 2, 3, generator=g), torch.randn(30, 2, 3, generator=g)
    expected = _naive_energy(x, y, True)
    assert math.isclose(energy_distance(x, y), expected, rel_tol=1e-9)
    assert math.isclose(energy_distance(x.numpy(), y.float().numpy()), expected, rel_tol=1e-6)


def test_energy_unbiased_under_the_null():
    g = torch.Generator().manual_seed(0)
    u_stats, v_stats = [], []
    for _ in range(300):
        x, y = torch.randn(20, 2, generator=g), torch.randn(20, 2, generator=g)
        u_stats.append(energy_distance(x, y))
        v_stats.append(energy_distance(x, y, unbiased=False))
    u, v = np.array(u_stats), np.array(v_stats)
    assert abs(u.mean()) < 4 * u.std() / math.sqrt(len(u))  # zero in expectation
    assert (v >= 0).all() and v.mean() > 10 * v.std() / math.sqrt(len(v))  # biased upwards
    # two large samples of one law: close to zero
    x, y = torch.randn(3000, 2, generator=g), torch.randn(3000, 2, generator=g)
    assert abs(energy_distance(x, y)) < 5e-3


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_energy_shifted_gaussians_closed_form(delta):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4000, 1, generator=g), torch.randn(4000, 1, generator=g) + delta
    expected = _energy_1d_gaussians(delta)
    assert expected > 0
    assert abs(energy_distance(x, y) - expected) < 0.05 * expected + 5e-3
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), rel=1e-12)


def test_energy_bad_inputs():
    with pytest.raises(ValueError, match="event size"):
        energy_distance(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n >= 2"):
        energy_distance(torch.zeros(1, 2), torch.zeros(5, 2))
    assert energy_distance(torch.zeros(1, 2), torch.ones(1, 2), unbiased=False) == pytest.approx(
        2 * math.sqrt(2)
    )
    with pytest.raises(ValueError, match="chunk"):
        energy_distance(torch.zeros(5, 2), torch.zeros(5, 2), chunk=0)


def test_fraction_on_support():
    x = data.checkerboard(1000, generator=torch.Generator().manual_seed(0))
    assert fraction_on_support(x, "checkerboard") == 1.0
    assert fraction_on_support(x + torch.tensor([2.0, 0.0]), "checkerboard") == 0.0
    half = torch.cat([x[:500], x[500:] + torch.tensor([2.0, 0.0])])
    assert fraction_on_support(half, data.checkerboard_support) == 0.5
    assert fraction_on_support(x, lambda z: z[:, 0] > 0) == pytest.approx(
        float((x[:, 0] > 0).double().mean())
    )
    with pytest.raises(ValueError, match="no bounded support"):
        fraction_on_support(x, "rings")
    with pytest.raises(ValueError, match="known"):
        fraction_on_support(x, "nope")
    with pytest.raises(TypeError):
        fraction_on_support(x, 3)


def test_nats_and_bits_per_dim():
    assert nats_per_dim(128.0, 64) == 2.0
    assert nats_per_dim(192.0, (3, 8, 8)) == 1.0
    per_dim = nats_per_dim(torch.tensor([64.0, 128.0]), [1, 8, 8])
    assert torch.equal(per_dim, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError):
        nats_per_dim(1.0, 0)
    # plain: nats / ln 2
    assert bits_per_dim(math.log(2)) == pytest.approx(1.0)
    # 8-bit data scaled to [0, 1): nll_y = nll_x + log 256
    assert bits_per_dim(1.0, -math.log(256)) == pytest.approx(1 / math.log(2) + 8)
    # by hand: 2.5 nats per dim on x = 2 q/17 - 1: (2.5 - log(2/17)) / ln 2
    assert bits_per_dim(2.5, math.log(2 / 17)) == pytest.approx((2.5 + math.log(8.5)) / 0.693147)
    t = bits_per_dim(torch.tensor([0.0, math.log(2)]), 0.0)
    assert torch.allclose(t, torch.tensor([0.0, 1.0]))


def _with_moments(z, mean, cov):
    """Affine map of z whose sample mean and unbiased covariance are exactly mean and cov."""
    z = z - z.mean(0)
    white = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T
    return mean + white @ np.linalg.cholesky(cov).T


def test_frechet_closed_form_2d():
    rng = np.random.default_rng(0)
    mean_a, mean_b = np.array([0.5, -1.0]), np.array([2.0, 1.0])
    cov_a = np.array([[2.0, 0.6], [0.6, 1.0]])
    cov_b = np.array([[0.5, -0.3], [-0.3, 1.5]])
    a = _with_moments(rng.standard_normal((500, 2)), mean_a, cov_a)
    b = _with_moments(rng.standard_normal((300, 2)), mean_b, cov_b)
    # for 2x2 PSD M: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), M = A^1/2 B A^1/2
    cross = math.sqrt(np.trace(cov_a @ cov_b) + 2 * math.sqrt(np.linalg.det(cov_a @ cov_b)))
    expected = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b) - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(torch.tensor(b), torch.tensor(a)) == pytest.approx(expected, rel=1e-9)
    assert abs(frechet_distance(a, a)) < 1e-9


def test_frechet_diagonal_and_1d():
    rng = np.random.default_rng(1)
    va, vb = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
    a = _with_moments(rng.standard_normal((200, 5)), np.zeros(5), np.diag(va))
    b = _with_moments(rng.standard_normal((200, 5)), np.ones(5), np.diag(vb))
    expected = 5.0 + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    x = _with_moments(rng.standard_normal((100, 1)), np.zeros(1), np.eye(1) * 4.0)[:, 0]
    y = _with_moments(rng.standard_normal((100, 1)), np.ones(1), np.eye(1))[:, 0]
    assert frechet_distance(x, y) == pytest.approx(1.0 + (2.0 - 1.0) ** 2, rel=1e-9)
    with pytest.raises(ValueError, match="same size"):
        frechet_distance(a, b[:, :3])


def _kid_brute(x, y, degree=3, gamma=None, coef=1.0):
    """The unbiased MMD^2 as explicit double sums over pairs."""
    gamma = 1 / x.shape[1] if gamma is None else gamma

    def k(a, b):
        return (gamma * float(a @ b) + coef) ** degree

    def within(z):
        return sum(k(z[i], z[j]) for i in range(len(z)) for j in range(len(z)) if i != j) / (
            len(z) * (len(z) - 1))

    cross = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return within(x) + within(y) - 2 * cross


@pytest.mark.parametrize(("degree", "gamma", "coef"), [(3, None, 1.0), (2, 0.5, 0.3), (1, 2.0, 0)])
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_kid_full_sets_equal_the_explicit_double_sums(degree, gamma, coef, chunk):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g), torch.randn(5, 3, generator=g) + 0.5
    mean, error = kid(x, y, subsets=1, degree=degree, gamma=gamma, coef=coef, chunk=chunk,
                      generator=g)
    assert mean == pytest.approx(_kid_brute(x, y, degree, gamma, coef), rel=1e-12)
    assert math.isnan(error)  # one subset: no spread


def test_kid_two_subsets_are_two_disjoint_blocks():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 2, generator=g), torch.randn(7, 2, generator=g)
    mean, error = kid(x, y, subsets=2, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    bx, by = torch.randperm(9, generator=g)[:8].view(2, 4), torch.randperm(7, generator=g)[:6]
    values = [_kid_brute(x[bx[i]], y[by.view(2, 3)[i]]) for i in range(2)]
    assert mean == pytest.approx(np.mean(values), rel=1e-12)
    assert error == pytest.approx(abs(values[0] - values[1]) / 2, rel=1e-9)  # std(ddof 1)/sqrt 2
    fixed = kid(x, y, subsets=2, subset_size=3, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    bx, by = torch.randperm(9, generator=g)[:6].view(2, 3), torch.randperm(7, generator=g)[:6]
    assert fixed[0] == pytest.approx(
        np.mean([_kid_brute(x[bx[i]], y[by.view(2, 3)[i]]) for i in range(2)]), rel=1e-12)


@pytest.mark.parametrize("shift", [0.25, 0.5, 1.0])
def test_kid_closed_form_shifted_gaussians(shift):
    """N(0, 1) against N(shift, 1) in 1D, k(x, y) = (x y + 1)^3 = sum_j C(3, j) (x y)^j: the
    squared MMD is sum_j C(3, j) (E X^j - E Y^j)^2 with moments (0, 1, 0) and
    (shift, 1 + shift^2, shift^3 + 3 shift)."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4000, 1, generator=g), torch.randn(4000, 1, generator=g) + shift
    exact = 3 * shift**2 + 3 * shift**4 + (shift**3 + 3 * shift) ** 2
    mean, error = kid(x, y, generator=g)
    assert abs(mean - exact) < 4 * error and error < exact / 2


def test_kid_grows_with_a_mean_shift():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(3000, 8, generator=g), torch.randn(3000, 8, generator=g)
    kids = [kid(x, y + shift, generator=torch.Generator().manual_seed(0))
            for shift in (0.0, 0.2, 0.5, 1.0)]
    assert abs(kids[0][0]) < 3 * kids[0][1]
    for (low, low_error), (high, high_error) in zip(kids, kids[1:], strict=False):
        assert high - low > 3 * math.hypot(low_error, high_error)


def test_kid_unbiased_and_standard_error_calibrated_under_the_null():
    """Two samples of one law, 200 seeds: the means average to 0, their spread across seeds
    is the reported standard error, and |mean| < 2 se about as often as a t with 9 degrees of
    freedom says (0.923; 10 independent subsets)."""
    g = torch.Generator().manual_seed(4)
    means, errors = [], []
    for _ in range(200):
        x, y = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g)
        mean, error = kid(x, y, generator=g)
        means.append(mean)
        errors.append(error)
    means, errors = np.array(means), np.array(errors)
    assert abs(means.mean()) < 4 * means.std() / math.sqrt(len(means))
    assert 0.85 < means.std() / math.sqrt((errors**2).mean()) < 1.2
    assert 0.86 < (abs(means) < 2 * errors).mean() < 0.98


def test_kid_reproducible_and_bad_inputs():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 3, generator=g), torch.randn(40, 3, generator=g)
    a = kid(x, y, generator=torch.Generator().manual_seed(1))
    assert a == kid(x.numpy(), y.numpy(), generator=torch.Generator().manual_seed(1))
    assert a != kid(x, y, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="subsets \\* subset_size <= n"):
        kid(x, y, subsets=5, subset_size=10)
    with pytest.raises(ValueError, match="subset_size >= 2"):
        kid(x, y, subsets=30)
    with pytest.raises(ValueError, match="subsets must be a positive integer"):
        kid(x, y, subsets=0)
    with pytest.raises(ValueError, match="degree"):
        kid(x, y, degree=0)
    with pytest.raises(ValueError, match="gamma"):
        kid(x, y, gamma=0.0)
    with pytest.raises(ValueError, match="same size"):
        kid(x, y[:, :2])


def _precision_recall_brute(real, fake, k):
    """k-th nearest other point by sorting each row; membership by explicit loops."""
    def radii(a):
        return [sorted(float((a[i] - a[j]).norm()) for j in range(len(a)) if j != i)[k - 1]
                for i in range(len(a))]

    def inside(points, centres, r):
        return np.mean([any(float((p - c).norm()) <= rc for c, rc in zip(centres, r,
                                                                          strict=True))
                        for p in points])

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_precision_recall_equals_brute_force(k, chunk):
    g = torch.Generator().manual_seed(k)
    real = torch.randn(15, 2, generator=g)
    centres = torch.tensor([[0.5, 0.0]] * 6 + [[4.0, 0.0]] * 6)  # half near the real data
    fake = centres + 0.5 * torch.randn(12, 2, generator=g)
    expected = _precision_recall_brute(real, fake, k)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # the case discriminates
    assert precision_recall(real, fake, k, chunk) == pytest.approx(expected, abs=1e-12)


def test_precision_recall_known_answers():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 5, generator=g)
    assert precision_recall(a, a) == (1.0, 1.0)  # every point is inside its own ball
    assert precision_recall(a, a + 100.0) == (0.0, 0.0)  # disjoint, far apart
    b = torch.randn(300, 5, generator=g) + 0.5
    assert precision_recall(a, b) == precision_recall(b, a)[::-1]  # symmetry


def test_precision_recall_half_of_the_modes():
    """Real data on four well-separated modes, fake data on two of them: every fake sample
    is realistic (precision ~1, what a same-law sample reaches in 2D with k = 3), and recall
    is the share of real samples in the covered modes, times that same coverage."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    real_modes = torch.randint(4, (2000,), generator=g)
    real = centres[real_modes] + torch.randn(2000, 2, generator=g)
    fake = centres[torch.randint(2, (2000,), generator=g)] + torch.randn(2000, 2, generator=g)
    precision, recall = precision_recall(real, fake)
    covered = (real_modes < 2).double().mean().item()
    assert abs(covered - 0.5) < 0.05
    assert precision > 0.95
    assert 0.95 * covered < recall <= covered


def test_precision_recall_bad_inputs():
    a = torch.randn(5, 2)
    with pytest.raises(ValueError, match="k must be an integer in .* = \\[1, 3\\], got 4"):
        precision_recall(a, torch.randn(4, 2), k=4)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(a, a, k=0)
    with pytest.raises(ValueError, match="same size"):
        precision_recall(a, torch.randn(5, 3))


def test_sample_quality_collects_the_metrics():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(200, 4, generator=g), torch.randn(300, 4, generator=g) + 0.3
    quality = sample_quality(real, fake, 2, 4, generator=torch.Generator().manual_seed(1))
    mean, error = kid(real, fake, subsets=4, generator=torch.Generator().manual_seed(1))
    precision, recall = precision_recall(real, fake, 2)
    assert quality == {"frechet": frechet_distance(real, fake), "kid": mean, "kid_se": error,
                       "precision": precision, "recall": recall}
