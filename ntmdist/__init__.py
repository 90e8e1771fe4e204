r"""ntmdist: Normalizing Trajectory Models as PyTorch/Pyro distributions.

Few-step generative models whose every reverse step is a conditional normalizing flow, so the
whole trajectory has an exact likelihood (Gu et al., 2026, arXiv 2605.08078).
"""

from importlib.metadata import PackageNotFoundError, version

from . import conditioning, distill, flow_matching, pyro, transforms
from .dit import TransformerPredictor
from .guidance import combine as guidance_combine
from .model import NTM
from .predictor import MLPPredictor
from .schedule import Schedule
from .step import ReverseStep
from .trajectory import TrajectoryDistribution
from .transporter import Transporter

try:
    __version__ = version("ntmdist")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "NTM",
    "MLPPredictor",
    "ReverseStep",
    "Schedule",
    "TrajectoryDistribution",
    "TransformerPredictor",
    "Transporter",
    "__version__",
    "conditioning",
    "distill",
    "flow_matching",
    "pyro",
    "guidance_combine",
    "transforms",
]
