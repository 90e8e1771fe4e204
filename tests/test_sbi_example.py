"""``examples/sbi.py``: its reference posterior is the exact one (checked against importance
sampling from the prior), and the script runs end to end in its quick mode."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _scripts import ROOT, load_script, subprocess_env

EXAMPLE = ROOT / "examples" / "sbi.py"
example = load_script(EXAMPLE, "sbi_example")


def test_reference_matches_importance_sampling_from_the_prior():
    """Posterior moments of the grid sampler equal self-normalised importance sampling with the
    prior as proposal, within a few standard errors of both estimates."""
    g = torch.Generator().manual_seed(0)
    x = example.X_OBS.double()
    ref = example.reference(example.X_OBS, 20_000, g).double()
    theta = example.prior(400_000, g).double()
    loglik = torch.distributions.Normal(example.summaries(theta), example.NOISE.double())
    w = torch.softmax(loglik.log_prob(x).sum(-1), 0)
    ess = 1 / w.square().sum()
    assert ess > 2000  # enough prior draws land near the posterior
    for stat in (lambda t: t[:, 0] ** 2, lambda t: t.prod(-1), lambda t: t[:, 1] ** 2 + t[:, 0]):
        s_ref, s_is = stat(ref), stat(theta)
        m_is = (w * s_is).sum()
        se = (s_ref.var() / len(ref) + (w * (s_is - m_is) ** 2).sum() / ess).sqrt()
        assert abs(s_ref.mean() - m_is) < 4 * se


def test_reference_lies_in_the_prior_box_and_is_symmetric():
    ref = example.reference(example.X_OBS, 20_000, torch.Generator().manual_seed(1))
    assert ref.abs().max() <= example.BOX
    assert abs(ref.mean(0)).max() < 0.05  # theta -> -theta leaves the posterior unchanged


@pytest.mark.slow
def test_quick_run_writes_the_plot(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--no-progress", "--out",
                           str(tmp_path)], cwd=ROOT, env=subprocess_env(OMP_NUM_THREADS="1"),
                          text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"NTM (-?[\d.]+), another reference draw (-?[\d.]+), the prior ([\d.]+)",
                      proc.stdout)
    assert found, proc.stdout
    ntm, floor, prior = map(float, found.groups())
    assert abs(floor) < 0.02 and prior > 0.1 and 0 <= ntm < 10  # a finite, sane distance
    png = Path(tmp_path) / "posterior.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
