"""The package's layout: ``import ntmdist`` loads no optional dependency, the modules import each
other without cycles (imports inside functions included), nothing lower imports anything
higher (core < training < cli), and the old import path of the fit loop still works."""

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _scripts import ROOT, subprocess_env

PACKAGE = ROOT / "ntmdist"
OPTIONAL = ("tqdm", "matplotlib", "sklearn", "scipy", "zuko", "nflows")


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in PACKAGE.rglob("*.py")}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over ntmdist, from every import statement (functions
    included); importing ``a.b.c`` also runs the packages ``a.b`` and ``a`` that are not
    already the importer's own."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                subs = {f"{base}.{a.name}" for a in node.names} & modules.keys()
                targets |= subs or {base}
        edges = set()
        for target in targets:
            while target and target not in modules:  # "ntmdist.transforms.base.x" and the like
                target = target.rpartition(".")[0]
            if target and target != name:
                own = {name, *_ancestors(name)}
                edges |= {target} | {a for a in _ancestors(target) if a not in own}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one module."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert graph["ntmdist.training.loop"] >= {"ntmdist.training.update"}
    # importing ntmdist.training.checkpoint also runs ntmdist/training/__init__.py
    assert graph["ntmdist.cli.commands"] >= {"ntmdist.training.checkpoint", "ntmdist.training"}
    assert "ntmdist.data" in graph["ntmdist.metrics.samples"]  # function-level imports count
    assert graph["ntmdist.config"] == {"ntmdist.schedule"}  # optional parts register themselves
    assert cycles(graph) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_nothing_lower_imports_anything_higher():
    """Layers: the core, then ``ntmdist.training``, then ``ntmdist.cli`` (and ``ntmdist.train``,
    the old name of the training kit)."""

    def layer(module: str) -> int:
        if module.startswith("ntmdist.cli") or module == "ntmdist.__main__":
            return 2
        return 1 if module.startswith(("ntmdist.training", "ntmdist.train")) else 0

    graph = import_graph()
    upward = [(a, b) for a, targets in graph.items() for b in targets if layer(b) > layer(a)]
    assert upward == []


def test_the_training_kit_knows_no_ntm_insides():
    """What is specific to an NTM (its predictor, for the alignment term) is passed to fit."""
    used = [(path.name, node.lineno) for path in (PACKAGE / "training").glob("*.py")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr == "predictor"]
    assert used == []


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=subprocess_env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
def test_import_ntmdist_loads_no_optional_dependency():
    """ntmdist's own imports add none of them; tqdm alone is loaded before ntmdist runs, by
    ``import pyro`` (pyro.infer.mcmc, unconditionally) and ``import torch`` (torch.hub, when
    installed), so the others are checked missing too."""
    roots = repr(set(OPTIONAL))
    added = run_python(
        "import sys, torch, pyro\n"
        "before = set(sys.modules)\n"
        "import ntmdist\n"
        f"print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {roots}))")
    assert added == "[]"
    others = repr(set(OPTIONAL) - {"tqdm"})
    blocked = run_python(
        f"import sys\nfor name in {others}:\n    sys.modules[name] = None\n"
        "import ntmdist\nprint(ntmdist.NTM.__name__)")
    assert blocked == "NTM"


def test_the_old_training_path_still_works():
    from ntmdist import train, training

    for name in ("fit", "FitResult", "lr_factor", "aux_factor", "ema_decay", "fit_velocity",
                 "fit_denoiser"):
        assert getattr(train, name) is getattr(training, name), name
    from ntmdist.train import fit  # noqa: F401  (the line users have)


@pytest.mark.slow
def test_the_upper_layers_are_not_imported_by_ntmdist():
    loaded = run_python("import sys, ntmdist\nprint(sorted(m for m in sys.modules "
                        "if m.startswith(('ntmdist.training', 'ntmdist.cli', 'ntmdist.train'))))")
    assert loaded == "[]"


def test_every_module_imports():
    """``--doctest-ignore-import-errors`` (pyproject) lets the doctests of an optional
    integration go uncollected when its package is missing: every other module must import, and
    the optional one must name its extra."""
    optional = {"ntmdist.integrations.sbi": ("sbi", "ntmdist[sbi]")}
    for name in sorted(import_graph()):
        if name in optional and importlib.util.find_spec(optional[name][0]) is None:
            with pytest.raises(ImportError, match=re.escape(optional[name][1])):
                importlib.import_module(name)
        else:
            importlib.import_module(name)


def test_the_api_reference_documents_every_module():
    """Each module (but ``__main__``) has an ``automodule`` directive in docs/api/."""
    documented = {m for page in (ROOT / "docs" / "api").glob("*.rst")
                  for m in re.findall(r"^\.\. automodule:: (\S+)$", page.read_text(), re.M)}
    assert set(_modules()) - {"ntmdist.__main__"} - documented == set()
    assert documented - set(_modules()) == set()  # no directive for a module that is gone
