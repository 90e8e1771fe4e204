"""A feature whose optional dependency is missing says which extra installs it (the missing
package is simulated with ``sys.modules[name] = None``, which makes its import fail)."""

import importlib
import subprocess
import sys

import pytest
from _scripts import ROOT, subprocess_env

from ntmdist.data import images
from ntmdist.extras import require


def hide(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra(monkeypatch):
    assert require("json", "data", "a test").dumps(1) == "1"
    hide(monkeypatch, "json")
    with pytest.raises(ImportError, match=r"a test needs .* json: pip install 'ntmdist\[data\]'"):
        require("json", "data", "a test")


@pytest.mark.parametrize("loader, feature", [
    (images._digits_arrays, "ntmdist.data.digits"),
    (images._photos, "ntmdist.data.image_patches"),
])
def test_image_data_without_scikit_learn(monkeypatch, loader, feature):
    hide(monkeypatch, "sklearn", "sklearn.datasets")
    with pytest.raises(ImportError, match=rf"{feature} .* pip install 'ntmdist\[data\]'"):
        loader.__wrapped__()  # past the cache, which may hold the arrays already


def test_figures_without_matplotlib(monkeypatch):
    hide(monkeypatch, "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg")
    monkeypatch.delitem(sys.modules, "ntmdist.cli.plots", raising=False)
    with pytest.raises(ImportError, match=r"figures .* pip install 'ntmdist\[plots\]'"):
        importlib.import_module("ntmdist.cli.plots")


@pytest.mark.slow
def test_the_command_line_without_matplotlib(tmp_path):
    """``fit`` stops before training; ``evaluate`` draws no figure and needs none."""
    code = ("import sys\nsys.modules['matplotlib'] = None\nfrom ntmdist import cli\n"
            "cli.main(sys.argv[1:])")
    run = [sys.executable, "-c", code]
    done = subprocess.run([*run, "fit", "checkerboard", "--steps", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=subprocess_env(), cwd=ROOT,
                          timeout=300)
    assert done.returncode != 0 and "pip install 'ntmdist[plots]'" in done.stderr
    assert list(tmp_path.iterdir()) == []
    done = subprocess.run([*run, "--help"], capture_output=True, text=True,
                          env=subprocess_env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "evaluate" in done.stdout
