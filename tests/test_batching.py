"""The batched passes of docs/design.md (sections 1.8 and 1.9, and the one-pass contract of
section 3), checked by counting network calls.

``log_prob`` runs the transporter forward once over all levels and the predictor once over all
steps; ``sample`` runs the predictor once per step and inverts the transporter only at level 0;
``rsample`` inverts every level in one batched inverse. A masked autoregressive block evaluates
its MADE hyper-network once per forward pass and ``D`` times per inverse, so counting the
hyper-network's calls tells forward passes from inverses. The TarFlow block's inverse runs one
token per layer per step through its key/value cache.
"""

from collections import Counter

import pytest
import torch
from _models import perturb, seeded, small_model

import ntmdist as nd
from ntmdist.distill import Denoiser
from ntmdist.transforms import CausalTransformerAffine

D, T = 3, 4


class Calls:
    """Forward hooks that record the shape of the first input of each named module."""

    def __init__(self, **modules: torch.nn.Module) -> None:
        self.shapes: dict[str, list[tuple[int, ...]]] = {name: [] for name in modules}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str):
        def hook(module, args, output):
            self.shapes[name].append(tuple(args[0].shape))
        return hook

    def __enter__(self) -> "Calls":
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()

    def count(self, name: str) -> Counter:
        """``Counter`` of input shapes seen by module ``name``."""
        return Counter(self.shapes[name])


def counted(model: nd.NTM) -> Calls:
    blocks = {f"block{i}": b.hyper for i, b in enumerate(model.transporter.blocks)}
    return Calls(predictor=model.predictor, transporter=model.transporter,
                 step_flow=model.step_flow.hyper, **blocks)


@pytest.fixture
def model() -> nd.NTM:
    return small_model(features=D, steps=T, step_flow=True)


@pytest.mark.parametrize("batch", [(5,), (2, 3)])
def test_log_prob_is_one_transporter_pass_and_one_predictor_pass(model, batch):
    traj = model.schedule.sample(torch.randn(*batch, D), 1)
    n = torch.Size(batch).numel()
    with counted(model) as calls:
        model().log_prob(traj)
    # the predictor sees the T noisier levels u_{t_1..t_T}, flattened into one batch
    assert calls.count("predictor") == {(T * n, D): 1}
    # the transporter maps levels 0..T-1 (level T is pure noise, where f is the identity) in
    # one forward pass: each block evaluates its hyper-network once, never an inverse
    assert calls.count("transporter") == {(*batch, T): 1}
    for i in range(len(model.transporter.blocks)):
        assert calls.count(f"block{i}") == {(*batch, T, D): 1}
    assert calls.count("step_flow") == {(*batch, T, D): 1}


def test_sample_steps_in_u_space_and_inverts_once(model):
    n = 7
    with counted(model) as calls:
        model.sample(n)
    assert calls.count("predictor") == {(n, D): T}
    # one transporter at level 0 only, inverted once: D hyper-network passes per block on (n, D)
    assert calls.count("transporter") == {(n,): 1}
    for i in range(len(model.transporter.blocks)):
        assert calls.count(f"block{i}") == {(n, D): D}
    # the per-step bijector is inverted at every step (docs/design.md, section 4.1)
    assert calls.count("step_flow") == {(n, D): T * D}


def test_learned_denoiser_sample_skips_the_transporter(model):
    model.denoiser = Denoiser(D, width=8, depth=1).double()
    with counted(model) as calls:
        model.sample(4, denoise="learned")
    assert calls.count("predictor") == {(4, D): T}
    assert calls.count("transporter") == {}
    assert all(calls.count(f"block{i}") == {} for i in range(len(model.transporter.blocks)))


def test_rsample_inverts_all_levels_in_one_batched_pass(model):
    n = 6
    with counted(model) as calls:
        traj, logp = model().rsample_and_log_prob((n,))
    assert traj.shape == (n, T + 1, D) and logp.shape == (n,)
    assert calls.count("predictor") == {(n, D): T}
    assert calls.count("transporter") == {(n, T): 1}
    for i in range(len(model.transporter.blocks)):
        assert calls.count(f"block{i}") == {(n, T, D): D}


def test_image_log_prob_is_one_pass_per_layer():
    with seeded(0):
        model = nd.NTM((1, 4, 4), nd.Schedule(steps=T, t_min=0.05),
                       transporter_options={"width": 8, "depth": 1, "heads": 2},
                       predictor_options={"width": 8, "mults": (1,), "embedding": 8}).double()
    layers = {f"b{i}l{j}": layer for i, b in enumerate(model.transporter.blocks)
              for j, layer in enumerate(b.tokens.layers)}
    traj = model.schedule.sample(torch.randn(3, 1, 4, 4), 3)
    with Calls(predictor=model.predictor, **layers) as calls:
        model().log_prob(traj)
    assert calls.count("predictor") == {(3 * T, 1, 4, 4): 1}
    tokens = model.transporter.blocks[0].tokens.tokens
    for name in layers:
        assert calls.count(name) == {(3 * T, tokens, 8): 1}


@pytest.mark.parametrize("reverse", [False, True])
def test_causal_transformer_inverse_uses_the_kv_cache(reverse):
    L, C, W, depth, n = 5, 2, 16, 2, 4
    with seeded(0):
        block = CausalTransformerAffine(L, C, context=3, width=W, depth=depth, heads=2,
                                        reverse=reverse).double()
    perturb(block, 0.3, seed=1)
    g = torch.Generator().manual_seed(2)
    x, c = torch.randn(n, L, C, generator=g), torch.randn(n, 3, generator=g)
    f = block(c)
    layers = {f"layer{j}": layer for j, layer in enumerate(block.layers)}
    with Calls(**layers) as calls:
        z, ladj = f.call_and_ladj(x)
    assert all(calls.count(name) == {(n, L, W): 1} for name in layers)
    with Calls(**layers) as calls:
        x_back, ladj_back = f.inverse_and_ladj(z)
    # one token per layer per step: each layer runs L times on sequences of length 1
    assert all(calls.count(name) == {(n, 1, W): L} for name in layers)
    assert not torch.equal(z, x)  # the perturbed block is not the identity
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(ladj_back, ladj, rtol=0, atol=1e-12)
