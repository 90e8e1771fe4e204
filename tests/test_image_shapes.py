"""Default image networks for every small image shape: a working model or a clear error."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import ntmdist as nd
from ntmdist.transporter import Transporter


def _expected_patch(h, w):
    """The documented rule: the largest of 4, 2 dividing H and W with >= 16 tokens, else 1."""
    for p in (4, 2):
        if h % p == 0 and w % p == 0 and (h // p) * (w // p) >= 16:
            return p
    return 1


@settings(deadline=None)
@given(c=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**16))
@example(c=1, h=2, w=2, seed=0)  # crashed with a bare StopIteration (fewer than 16 pixels)
@example(c=1, h=3, w=4, seed=0)
@example(c=4, h=1, w=1, seed=0)  # a single token
@example(c=1, h=8, w=8, seed=0)  # patch 2
def test_default_image_model_builds_and_scores_its_samples(c, h, w, seed):
    """Every shape in the range gets the documented patch and a working model (no refusal)."""
    torch.manual_seed(seed)
    model = nd.NTM((c, h, w))
    assert {b.patch for b in model.transporter.blocks} == {_expected_patch(h, w)}
    dist = model()
    traj = dist.sample((2,), generator=torch.Generator().manual_seed(seed))
    steps = model.schedule.steps
    assert traj.shape == (2, steps + 1, c, h, w)
    lp = dist.log_prob(traj)
    assert lp.shape == (2,) and torch.isfinite(lp).all()


def test_default_image_patch_rule_and_errors():
    width = {"width": 16, "depth": 1}
    assert Transporter.default_image((1, 16, 16), **width).blocks[0].patch == 4
    assert Transporter.default_image((3, 8, 12), **width).blocks[0].patch == 2
    assert Transporter.default_image((1, 6, 6), **width).blocks[0].patch == 1  # 9 tokens at 2
    assert Transporter.default_image(np.array([1, 3, 4]), **width).blocks[0].patch == 1
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Transporter.default_image((4, 4), **width)
    with pytest.raises(ValueError, match="positive integers"):
        Transporter.default_image((1, 0, 4), **width)
    with pytest.raises(ValueError, match="positive integers"):
        Transporter.default_image((1, 4.0, 4), **width)
    with pytest.raises(ValueError, match="must divide"):
        Transporter.default_image((1, 3, 4), patch=2, **width)
