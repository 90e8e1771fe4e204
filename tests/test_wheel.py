"""The wheel, installed into a fresh virtual environment (``torch==2.13.0`` first, then the
wheel and its runtime dependencies only: no extra), runs the README's API screen, its first
``python`` block, as a doctest away from the source tree; the console script answers."""

import os
import re
import shutil
import subprocess
import sys

import pytest
from _scripts import ROOT

pytestmark = pytest.mark.slow

OPTIONAL = ("sklearn", "matplotlib", "zuko", "nflows", "scipy", "pytest", "hypothesis")


def api_screen() -> str:
    """The first ``python`` block of the README."""
    return re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)


def run(*argv, cwd, timeout=900) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_runs_the_readme_api_screen(tmp_path):
    assert ">>> model = nd.NTM(" in api_screen()
    source = tmp_path / "source"  # a copy: building in the tree would leave build/ in it
    shutil.copytree(ROOT / "ntmdist", source / "ntmdist",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist",
        source, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("ntmdist-*.whl")
    env = tmp_path / "venv"
    run(sys.executable, "-m", "venv", env, cwd=tmp_path)
    python = env / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "torch==2.13.0", cwd=tmp_path)
    run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    screen = tmp_path / "screen.txt"
    screen.write_text(api_screen())
    run(python, "-m", "doctest", "-o", "NORMALIZE_WHITESPACE", "-o", "ELLIPSIS", screen,
        cwd=tmp_path)
    where = run(python, "-c", "import ntmdist; print(ntmdist.__file__)", cwd=tmp_path)
    assert where.startswith(str(env))  # the installed package, not the source tree
    missing = run(python, "-c", "import importlib.util as u; "
                  f"print([m for m in {OPTIONAL!r} if u.find_spec(m)])", cwd=tmp_path)
    assert missing.strip() == "[]"  # installed without any extra
    assert "evaluate" in run(env / "bin" / "ntmdist", "--help", cwd=tmp_path)
