"""Optional dependencies: a feature that needs one imports it with :func:`require`, which names
the extra of ``pip install 'ntmdist[...]'`` that installs it when it is missing.

The extras are ``data`` (scikit-learn: the digits and the photo patches of
:mod:`ntmdist.data`), ``plots`` (matplotlib: the figures of the command line), ``zuko`` and
``nflows`` (the libraries whose blocks :mod:`ntmdist.transforms` adapts; the adapters themselves
import neither). ``import ntmdist`` needs none of them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(name: str, extra: str, feature: str) -> ModuleType:
    """Import the module ``name``, or raise an :class:`ImportError` naming the extra to install.

    Arguments:
        name: The module to import (e.g. ``"sklearn.datasets"``).
        extra: The extra of ntmdist that installs it (e.g. ``"data"``).
        feature: What needs it, for the message (e.g. ``"ntmdist.data.digits"``).

    Example:
        >>> require("math", "data", "an example").sqrt(4.0)
        2.0
        >>> require("no_such_module", "plots", "an example")
        Traceback (most recent call last):
        ...
        ImportError: an example needs ... no_such_module: pip install 'ntmdist[plots]'
    """
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"{feature} needs the optional dependency {name.split('.')[0]}: "
                          f"pip install 'ntmdist[{extra}]'") from error
