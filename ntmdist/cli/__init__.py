r"""Command line: ``ntmdist fit``, ``ntmdist sample`` and ``ntmdist evaluate``
(also ``python -m ntmdist``).

.. code-block:: text

    ntmdist fit checkerboard --steps 2000 --out runs/checker  # model.pt metrics.json samples.png
    ntmdist fit points.npy --T 8 --width 128                  # any float array (N, D)
    ntmdist sample runs/checker/model.pt --n 5000 --out x.npy --png x.png
    ntmdist evaluate runs/checker/model.pt checkerboard --particles 256
    ntmdist fit theta.npy --context x.npy --out runs/post      # p(theta | x): rows paired
    ntmdist sample runs/post/model.pt --given "0.5,-1.2" --n 2000
    ntmdist evaluate runs/post/model.pt theta_test.npy --context x_test.npy

``fit`` trains an NTM with :func:`ntmdist.training.fit` (atomic, resumable checkpoints) and, for
the built-in toys, the same chain with Gaussian reverse steps (``transporter=None``) for
comparison, then evaluates both on held-out data. The NLL is the IWAE bound
(:meth:`ntmdist.NTM.iwae`), an upper bound on :math:`-\log p(x)` in nats per example (summed over
dimensions); the energy distance compares samples with held-out data; for toys with a bounded
support (the checkerboard) the fraction of samples on it is reported. Checkpoints carry the model
configuration, so ``sample`` and ``evaluate`` need nothing else.

With ``--context FILE`` (context vectors ``(N, C)``) or ``--labels FILE`` (integers ``(N,)``),
one row per data row, ``fit`` trains a conditional model :math:`p(x \mid y)`; ``evaluate``
takes held-out conditions the same way and ``sample`` one condition (``--given``, or a file
with one row) or one per sample (:mod:`~ntmdist.cli.conditions`).

Bad input (an unknown data name, a missing, truncated or foreign checkpoint, data or conditions
of the wrong shape, conditions with other rows than the data, NaN) ends with a one-line message
and exit status 2, like any argparse usage error.

The package: :mod:`~ntmdist.cli.parser` (arguments, :func:`main`),
:mod:`~ntmdist.cli.commands` (the command bodies), :mod:`~ntmdist.cli.evaluation` (loading
checkpoints and arrays, held-out metrics), :mod:`~ntmdist.cli.conditions` (conditions from
files and text), :mod:`~ntmdist.cli.report` (tables, JSON) and
:mod:`~ntmdist.cli.plots` (figures; the ``plots`` extra). ``import ntmdist`` does not import it.
"""

from .evaluation import evaluate_model, load_array, load_labels, load_model
from .parser import build_parser, main

__all__ = ["build_parser", "evaluate_model", "load_array", "load_labels", "load_model", "main"]
