"""Import a script (an example or a benchmark) as a module, for tests of its functions."""

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script(path: Path, name: str):
    """The module of the script at ``path``, registered as ``name``; the script's folder is put on
    ``sys.path`` first while it is imported, as when it runs, so that it finds its sibling
    helpers, and taken off again: scripts named like packages (``examples/sbi.py``) must not
    shadow them for the tests that come later."""
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(folder)
    return module


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for running the source tree in a subprocess: this one's, with the
    repository first on ``PYTHONPATH`` (what was there stays: dependencies may live on it), and
    ``extra``."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}
