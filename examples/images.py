"""Class-conditional (or unconditional) NTM on image data, on a CPU, a GPU or several processes.

Data (``--data``):

- ``digits`` (default): scikit-learn's bundled 8x8 digits, 17 grey levels, 10 classes.
- ``patches:SIZE``: a pool of ``--patch-count`` random SIZExSIZE RGB patches of
  scikit-learn's two sample photographs (unconditional; held-out patches come from the same
  two photographs, so they measure fit more than generalisation).
- a folder of equally sized 8-bit images (PNG, JPEG, ...; read with Pillow, which matplotlib
  installs; nothing is resized): class labels from the sub-folder names when every image lies
  in one of at least two sub-folders. Grey images stay 1-channel, anything else becomes RGB.
- a ``.npy`` array ``(N, C, H, W)``: ``uint8`` (256 levels) or floats already in ``[-1, 1]``;
  ``--labels y.npy`` gives integer class labels ``(N,)``.

Quantised data (``q`` in ``0..L-1``) is dequantised afresh at every draw,
``x = 2 (q + u) / L - 1`` with ``u ~ U[0, 1)``, and bits/dim are reported on the pixel scale
(log-scale ``log(2 / L)`` per dimension, ``ntmdist.metrics.bits_per_dim``): an upper bound on
the discrete data's bits/dim, since the held-out number is an IWAE bound with ``--particles``.
Float arrays are used as they are and their bits/dim are those of the density on ``[-1, 1]``
(log-scale 0; negative values are possible). With labels the model is class-conditional and
the bits/dim are those of :math:`p(x | y)`.

Training is :func:`ntmdist.training.fit` (AdamW, EMA, tqdm progress, atomic checkpoints in
``DIR/model.pt``, exact resume). Under ``torchrun`` with ``WORLD_SIZE > 1`` the process group is
initialised from the environment (NCCL on CUDA, gloo on the CPU), fit wraps the loss in DDP and
every rank draws its own batches (``--batch-size`` is per rank). On CUDA the loss runs under
bf16 autocast by default (``--no-bf16`` to turn it off); evaluation and sampling run in float32.
``--compile`` compiles the training loss with ``torch.compile`` (``--compile BACKEND`` picks the
backend; inductor by default).

The predictor is the FiLM U-Net (``--predictor unet``, width 32) or a DiT-style transformer over
2x2 patch tokens (``--predictor transformer``, :class:`ntmdist.TransformerPredictor`, width
64, 5 blocks, 4 heads: about the U-Net's parameter count on 8x8 digits).

At the end rank 0 evaluates the EMA weights and writes ``DIR/samples.png`` (a row per class,
with ``--guidance``, or an unconditional grid), ``DIR/trajectories.png`` (sampled
trajectories level by level, noise on the left) and ``DIR/metrics.json``; it prints bits/dim.
``--report-weights`` makes every rank write ``DIR/weights_rank{r}.json`` with SHA-256 digests of
its final raw and EMA weights (equal on all ranks when DDP kept them in sync).

    python examples/images.py --steps 2000 --out runs/images-digits
    python examples/images.py --data patches:16 --steps 5000 --device cuda --out runs/patches16
    python examples/images.py --data path/to/folder --batch-size 64 --out runs/folder
    python examples/images.py --data x.npy --labels y.npy --T 8 --out runs/array
    torchrun --standalone --nproc_per_node=4 examples/images.py --steps 2000 --out runs/ddp
    python examples/images.py --steps 4000 --out runs/images-digits --resume   # continue to 4000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from image_data import EVAL_SEED, Images, load_images, sampler, split
from torch import Tensor, nn

import ntmdist as nd
from ntmdist.cli.plots import image_grid, trajectory_strip
from ntmdist.metrics import bits_per_dim
from ntmdist.training import fit
from ntmdist.training.checkpoint import load_checkpoint, same_config

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH_SIZE, LR, T = 2000, 128, 1e-3, 4
T_MIN = (0.0, 0.05)  # level-0 time drawn per example in training; evaluated at t_0 = 0
TRANSPORTER_WIDTH, TRANSPORTER_DEPTH = 64, 2
PREDICTOR_WIDTH = {"unet": 32, "transformer": 64}  # about 0.4 M parameters each on 8x8 digits
TRANSFORMER = dict(depth=5, heads=4)  # patches of 2x2 pixels where the image size allows
GUIDANCE, PER_CLASS, MAX_CLASS_ROWS, UNCONDITIONAL_SAMPLES, TRAJECTORIES = 1.0, 10, 16, 64, 6
PARTICLES, EVAL_SIZE, EVAL_TRAJECTORIES = 64, 300, 4096  # IWAE chunks: particles * rows <= 4096
PATCH_COUNT, CHECKPOINT_EVERY = 20_000, 500

def choose_device(name: str) -> torch.device:
    """``auto``: CUDA when present; under torchrun each rank takes GPU ``LOCAL_RANK``."""
    cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    if not cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no CUDA device")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def start_distributed(device: torch.device) -> tuple[int, int]:
    """Initialise the process group from torchrun's environment when ``WORLD_SIZE > 1``;
    returns ``(rank, world_size)``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_model(shape: tuple[int, int, int], classes: int | None,
                args: argparse.Namespace) -> nd.NTM:
    width = args.predictor_width or PREDICTOR_WIDTH[args.predictor]
    transporter_options = dict(width=args.transporter_width, depth=args.transporter_depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        options: dict = dict(width=width)
        if args.predictor == "transformer":
            patch = 2 if shape[1] % 2 == 0 and shape[2] % 2 == 0 else 1
            options.update(patch=patch, **TRANSFORMER)
        model = nd.NTM(shape, nd.Schedule(steps=args.T, t_min=T_MIN), classes=classes,
                       transporter_options=transporter_options, predictor=args.predictor,
                       predictor_options=options)
    return model.to(torch.float32)


def autocast_loss(device: torch.device, bf16: bool,
                  backend: str | None = None) -> Callable[..., Tensor]:
    """``loss_fn`` for :func:`fit`: the model's loss, under bf16 autocast when ``bf16``,
    compiled by ``torch.compile`` with ``backend`` when one is given."""

    def loss_fn(model: nd.NTM, x: Tensor, y: Tensor | None,
                generator: torch.Generator) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model.loss(x, y, generator=generator).float()

    return loss_fn if backend is None else torch.compile(loss_fn, backend=backend)


def digest(state: dict[str, Tensor]) -> str:
    """SHA-256 of a state dict's names and raw bytes (equal iff the weights are bitwise equal)."""
    h = hashlib.sha256()
    for name, value in state.items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def held_out_bits(model: nd.NTM, images: Images, particles: int,
                  generator: torch.Generator) -> tuple[float, float]:
    """(bits/dim on the pixel scale, nats/dim on [-1, 1]) of the IWAE bound on ``images``."""
    device, n = next(model.parameters()).device, len(images.values)
    x = images.scaled(torch.arange(n), generator).to(device)
    y = None if images.labels is None else images.labels.to(device)
    rows = max(1, EVAL_TRAJECTORIES // particles)
    with torch.no_grad():
        bound = torch.cat([model.iwae(x[i:i + rows], None if y is None else y[i:i + rows],
                                      particles, generator) for i in range(0, n, rows)])
    nats = -bound.mean().item() / model.features
    return float(bits_per_dim(nats, images.log_scale)), nats


def parameters(module: nn.Module) -> int:
    """The number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def displayable(x: Tensor) -> Tensor:
    """Images with 1 or 3 channels for the plots (the first channel otherwise)."""
    return x if x.shape[-3] in (1, 3) else x[..., :1, :, :]


def write_figures(model: nd.NTM, classes: int | None, out: Path, args: argparse.Namespace,
                  generator: torch.Generator) -> float:
    """``samples.png`` and ``trajectories.png``; returns seconds per sample."""
    device = next(model.parameters()).device
    with torch.no_grad():
        begin = time.perf_counter()
        if classes:
            rows = min(classes, MAX_CLASS_ROWS)
            labels = torch.arange(rows, device=device).repeat_interleave(args.per_class)
            x = model.sample(len(labels), labels, args.guidance, generator=generator)
            shown = torch.arange(TRAJECTORIES, device=device) % classes
            traj = model(shown, guidance=args.guidance).sample(generator=generator)
        else:
            x = model.sample(UNCONDITIONAL_SAMPLES, generator=generator)
            traj = model().sample((TRAJECTORIES,), generator)
        seconds = (time.perf_counter() - begin) / len(x)
    image_grid(displayable(x).cpu(), out / "samples.png",
               nrow=args.per_class if classes else None)
    trajectory_strip(displayable(traj).cpu(), model.schedule.grid, out / "trajectories.png")
    return seconds


def check_resume(path: Path, model: nn.Module) -> int | None:
    """The step of a resumable checkpoint at ``path`` (``None`` when there is none)."""
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    if not same_config(state.get("meta", {}).get("model"), model):
        raise ValueError(f"cannot resume from {str(path)!r}: it holds a model with another "
                         "configuration; use the same options or another --out")
    return int(state["step"])


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits", help="digits, patches:SIZE, a folder or a .npy")
    p.add_argument("--labels", type=Path, help="integer labels (N,) for a .npy array")
    p.add_argument("--unconditional", action="store_true", help="ignore labels")
    p.add_argument("--patch-count", type=int, default=PATCH_COUNT)
    p.add_argument("--steps", type=int, default=STEPS, help="total optimiser steps")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="per rank")
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--T", type=int, default=T, help="reverse steps")
    p.add_argument("--transporter-width", type=int, default=TRANSPORTER_WIDTH)
    p.add_argument("--transporter-depth", type=int, default=TRANSPORTER_DEPTH)
    p.add_argument("--predictor", choices=("unet", "transformer"), default="unet")
    p.add_argument("--predictor-width", type=int,
                   help=f"default: {PREDICTOR_WIDTH['unet']} (unet), "
                        f"{PREDICTOR_WIDTH['transformer']} (transformer)")
    p.add_argument("--guidance", type=float, default=GUIDANCE)
    p.add_argument("--per-class", type=int, default=PER_CLASS, help="samples per class row")
    p.add_argument("--particles", type=int, default=PARTICLES, help="IWAE particles")
    p.add_argument("--eval-size", type=int, default=EVAL_SIZE, help="held-out images (max)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast of the loss (default: on for CUDA, off on the CPU)")
    p.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="torch.compile the training loss (backend: inductor by default)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "images")
    p.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY)
    p.add_argument("--resume", action="store_true", help="continue from DIR/model.pt")
    p.add_argument("--report-weights", action="store_true",
                   help="each rank writes DIR/weights_rank{r}.json (weight digests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    args.parser = p
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = arguments(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = choose_device(args.device)
        images = load_images(args.data, args.labels, args.patch_count, args.seed)
    except ValueError as error:
        args.parser.error(str(error))
    if args.unconditional:
        images.labels = images.class_names = None
    bf16 = device.type == "cuda" if args.bf16 is None else args.bf16
    train, test = split(images, args.eval_size, EVAL_SEED + args.seed)
    model = build_model(tuple(images.values.shape[1:]), images.classes, args)
    path = args.out / "model.pt"
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        resumed = check_resume(path, model) if args.resume else None
    except ValueError as error:
        args.parser.error(str(error))
    rank, world = start_distributed(device)
    try:
        if rank == 0:
            print(f"{images.name}: {len(train.values)} training and {len(test.values)} held-out "
                  f"images {tuple(images.values.shape[1:])}, {images.classes or 'no'} classes; "
                  f"{world} process(es) on {device}, bf16 {bf16}, {args.predictor} predictor "
                  f"({parameters(model.predictor):,} parameters)"
                  + (f"; resuming from step {resumed} of {path}" if resumed is not None else ""))
        result = fit(model, sampler(train), steps=args.steps, batch_size=args.batch_size,
                     lr=args.lr, checkpoint=path, checkpoint_every=args.checkpoint_every,
                     resume=args.resume, seed=args.seed, progress=args.progress, device=device,
                     loss_fn=autocast_loss(device, bf16, args.compile))
        if args.report_weights:
            report = {"rank": rank, "world_size": world, "step": result.step,
                      "model": digest(result.model.state_dict()),
                      "ema": digest(result.ema_model.state_dict())}
            (args.out / f"weights_rank{rank}.json").write_text(json.dumps(report, indent=2))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank != 0:
        return None
    model = result.apply_ema().eval()
    g = torch.Generator().manual_seed(EVAL_SEED + 1 + args.seed)
    bpd, nats = held_out_bits(model, test, args.particles, g)
    seconds = write_figures(model, images.classes, args.out, args, g)
    losses = result.history["loss"]
    metrics = {
        "data": images.name, "event_shape": list(images.values.shape[1:]),
        "classes": images.classes, "class_names": images.class_names,
        "conditional_bits": images.classes is not None,
        "bits_per_dim": bpd, "nats_per_dim": nats,
        "log_scale_per_dim": images.log_scale, "particles": args.particles,
        "held_out": len(test.values), "step": result.step, "world_size": world,
        "batch_size_per_rank": args.batch_size, "T": args.T, "guidance": args.guidance,
        "predictor": args.predictor, "predictor_parameters": parameters(model.predictor),
        "device": str(device), "bf16": bf16, "compile": args.compile,
        "train_seconds_this_run": round(result.elapsed, 2),
        "sample_seconds_per_100": round(100 * seconds, 4),
        "final_loss": losses[-1] if losses else None,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{images.name}, NTM T={args.T}: {bpd:.3f} bits/dim on {len(test.values)} held-out "
          f"images (IWAE, {args.particles} particles) after {result.step} steps; wrote "
          f"{args.out / 'samples.png'}, trajectories.png, metrics.json")
    return metrics


if __name__ == "__main__":
    main()
