"""The package's imports flow one way (docs/layout.md: How the code is laid out): a module imports only
from its own layer or the layers below, wherever the import statement stands."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "reslab"

LAYERS = [
    ["errors", "_lazy", "atomic", "rundir", "outputs", "runtime", "launch"],
    ["models"],
    ["summary", "data"],
    ["train.config", "train.schedule", "train.checkpoint", "train.step", "train.logging", "train.tracking",
     "train.record", "train.splits", "evaluate", "weights"],
    ["train.setup", "train.loop", "train"],
    ["predict", "quantize", "optimize", "backends", "export", "explain", "bench"],
    ["experiments", "demo", "report"],
    ["cli", "__main__", ""],
]


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    """The layer of the longest listed prefix of `module`."""
    best, level = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".") or name == "") and len(name) > best:
                best, level = len(name), i
    assert level is not None, module
    return level


def _imports(text: str, module: str, is_package: bool = False) -> set[str]:
    """reslab modules imported anywhere in the source `text` of `module` (relative imports resolved)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    tree = ast.parse(text)
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
                   for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # `if TYPE_CHECKING:` imports are annotations, not imports
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "reslab":
                base = node.module.split(".")[1:]
            else:
                continue
            target = ".".join(base)
            for alias in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{alias.name}" if target else alias.name
                if (SRC / sub.replace(".", "/")).with_suffix(".py").exists() or (SRC / sub.replace(".", "/")).is_dir():
                    found.add(sub)
                elif target:
                    found.add(target)  # a name the package root defines (e.g. __version__) is no import of it
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("reslab.")}
    return found


def test_layers_cover_every_module() -> None:
    for path in SRC.rglob("*.py"):
        _layer(_module(path))


def test_imports_flow_one_way() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module(path)
        for target in _imports(path.read_text(), module, path.name == "__init__.py"):
            if _layer(target) > _layer(module):
                upward.append(f"{module or 'reslab'} -> {target}")
    assert not upward, "imports against the layers: " + ", ".join(upward)


def test_the_layer_check_sees_an_upward_import() -> None:
    # the check itself: a models module importing the training loop, relatively or not, is caught
    for text in ("from ..train.loop import train\n", "def f():\n    import reslab.train.loop\n"):
        assert _imports(text, "models.blocks") == {"train.loop"}
    assert _imports("from . import streaming\n", "data", is_package=True) == {"data.streaming"}
    assert _imports("if TYPE_CHECKING:\n    from ..train import loop\n", "models.blocks") == set()
    assert _layer("train.loop") > _layer("models.blocks") == _layer("models")


def test_every_subpackage_and_module_resolves_from_the_package():
    """`import reslab; reslab.train.preset` works as `reslab.data` does, in a fresh interpreter."""
    import subprocess
    import sys

    names = sorted({_module(p).split(".")[0] for p in SRC.rglob("*.py")} - {"", "__main__", "_lazy", "cli"})
    code = ("import reslab, sys; missing = [n for n in sys.argv[1:] if not hasattr(reslab, n)]; "
            "assert not missing, missing; assert callable(reslab.train.preset) and reslab.models.create_model; "
            "assert callable(reslab.summary) and callable(reslab.optimize)")
    subprocess.run([sys.executable, "-c", code, *names], check=True)
