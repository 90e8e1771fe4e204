"""Test configuration: float64 by default (float32 where a test asks), Hypothesis profiles.

The default dtype is set per test through a fixture and restored afterwards, so no global
torch state leaks between tests (or into doctests).
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def float64_default():
    """Run every test in float64 and restore the previous default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Small networks run fastest on one thread (and CI has two cores shared by everything)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def default_validation():
    """Start every test with torch's distribution validation on (its default) and restore the
    previous setting: importing zuko, and compiling with ``torch.compile``, switch it off
    globally, which would otherwise change what later tests check."""
    dist = torch.distributions.Distribution
    previous = dist._validate_args
    dist.set_default_validate_args(True)
    yield
    dist.set_default_validate_args(previous)
