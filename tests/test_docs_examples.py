"""Every fenced ```python and ```bash example of README.md and docs/**/*.md runs here, so that a
renamed function, flag or config field fails the suite; and the generated reference pages cover
every command, flag, config field and module.

How an example runs:
- The examples of one page run in order, in one fresh working directory (a page's later examples
  read what its earlier ones wrote) and, for ```python, one namespace. The directory holds
  `cat.jpg`, `photos/` (an image folder with train/, val/ and test/ of two classes, photos of
  different sizes) and `docs/` (this repository's, to read).
- A ```bash example is a list of `reslab ...` (or `python -m reslab ...`) commands, each run in
  this process through `reslab.cli.main` and expected to exit 0 (`<!-- exit: N -->` on the line
  before the fence expects N); anything else in a ```bash block must be marked skipped.
- `<!-- skip: REASON -->` on the line before a fence skips that example: it is reported as a
  skipped test with REASON (GPU, cluster, downloads, hours), never silently.
- A run directory an example reads (`runs/NAME`, not an `--out`) that the page has not written is a
  3-step ResNet-20 run on the digits; `resnet18.pth` is torchvision's ResNet-18 state dict
  (untrained, the published file's keys and shapes).
- The sizes are the test's own, by the substitutions below (CLI_SUBSTITUTIONS, PY_SUBSTITUTIONS):
  datasets that need a download or a path of the author's machine become the embedded digits,
  runs take 3 steps of 8 images, experiments one small depth, benchmarks one quick round, the
  inference examples a ResNet-18 and 4 calibration images.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*(skip|exit):\s*(.*?)\s*-->$")
LANGUAGES = ("python", "bash", "text")  # ```text: output and trees, never run

# --- the substitutions --------------------------------------------------------------------------
DOWNLOADED = {"cifar10", "cifar100", "cifar100_coarse", "mnist", "fashion_mnist"}
ITERS = "3"  # optimizer steps of every run
BATCH = "8"  # images per step
DEPTHS = {"shortcuts": ["8"]}  # experiments without --depths: one small depth (6n+2)
DEFAULT_DEPTHS = ["8"]
CLI_SUBSTITUTIONS = """
| command | in the example | in the test | why |
| --- | --- | --- | --- |
| train, experiment, eval | --data cifar10 / cifar100 / mnist / fashion_mnist, or imagefolder:/shards: of a path not in the directory | --data digits | no download, no author's paths |
| experiment | --data substituted, no --out | --out runs/experiments-<the example's data> | later examples find it where the example says |
| train, experiment | --epochs N / --iters N | --iters 3 | seconds, not hours |
| train, experiment | (always) | --set batch_size=8 --quiet | small steps, short output |
| train | (always) | --set workers=0 | streamed images decoded in the test process |
| train, experiment | --preset paper-cifar / fast-cifar, no val_size | --set val_size=0.1 | their 5,000 held-out images exceed the digits |
| experiment | --seeds N / --jobs N | --seeds min(N, 2) / --jobs 1 | one core |
| experiment | no --depths | --depths 8 (each experiment's nets at one depth) | a few nets |
| experiment budget | --budgets ... | --budgets 3 6 | seconds |
| experiment responses | OUT without runs | `experiment degradation` into OUT first | it reads trained runs |
| demo | --epochs N / --depths A B | --epochs 1 --depths 8 14 (and --quiet) | seconds |
| bench | --models ... | --models resnet20 --batch 2 --repeats 1 --no-latency --no-compile --peers none | seconds |
| report | no --limit | --limit 20 | 20 test images per run |
| any | an absolute path | the same path inside the working directory | nothing written outside it |
"""
PY_SUBSTITUTIONS = [  # (pattern, replacement, why)
    (r"\bepochs=\d+", f"iters={ITERS}", "seconds, not hours"),
    (r'data="(?:cifar10|cifar100|mnist|fashion_mnist|imagefolder:/[^"]*)"', 'data="digits"', "no download"),
    (r'preset\("(paper-cifar|fast-cifar)",', rf'preset("\1", val_size=0.1, iters={ITERS}, batch_size={BATCH},',
     "their 5,000 held-out images exceed the digits"),
    (r"torch\.randn\(\d+, 3, 224, 224\)", "torch.randn(4, 3, 224, 224)", "4 calibration images"),
    (r'create_model\("resnet50"\)\.eval\(\)', 'create_model("resnet18").eval()',
     "a smaller net to quantize, convert and export"),
]


@dataclass
class Example:
    page: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    code: str
    skip: str | None = None
    exit: int = 0

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def read_examples(path: Path) -> list[Example]:
    """The fenced code blocks of a Markdown file, with the marker on the line before each."""
    lines = path.read_text().splitlines()
    page = str(path.relative_to(ROOT))
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(prev)
        ex = Example(page, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n")
        if marker and marker.group(1) == "skip":
            ex.skip = marker.group(2)
        elif marker:
            ex.exit = int(marker.group(2))
        out.append(ex)
        i = j + 1
    return out


ALL = [ex for page in PAGES for ex in read_examples(page)]
RUN = [ex for ex in ALL if ex.lang in ("python", "bash")]
RUNNABLE_PAGES = sorted({ex.page for ex in RUN if ex.skip is None})
SKIPPED = [ex for ex in RUN if ex.skip is not None]


# --- the working directory ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def prebuilt(tmp_path_factory):
    """A data cache for the whole session and one finished 3-step digits run to copy."""
    base = tmp_path_factory.mktemp("docs-examples")
    old = os.environ.get("RESLAB_DATA")
    os.environ["RESLAB_DATA"] = str(base / "cache")
    rc, out = _main(["train", "--model", "resnet20", "--data", "digits", "--iters", ITERS,
                     "--set", f"batch_size={BATCH}", "--out", str(base / "run"), "--quiet"])
    assert rc == 0, out
    yield base / "run"
    if old is None:
        os.environ.pop("RESLAB_DATA", None)
    else:
        os.environ["RESLAB_DATA"] = old


def _workspace(path: Path) -> Path:
    rng = np.random.default_rng(0)
    path.mkdir(parents=True)
    for split, n in (("train", 8), ("val", 3), ("test", 3)):
        for c, cls in enumerate(("cat", "dog")):
            (path / "photos" / split / cls).mkdir(parents=True)
            for i in range(n):
                h, w = (40 + 8 * i, 48) if i % 2 else (48, 56 + 4 * i)  # photos of different sizes
                pixels = rng.integers(0, 120, (h, w, 3), dtype=np.uint8) + np.uint8(100 * c)
                Image.fromarray(pixels).save(path / "photos" / split / cls / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path / "cat.jpg")
    (path / "docs").symlink_to(ROOT / "docs")
    return path


def _resnet18_weights(path: Path) -> None:
    import torch
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), path)


FIXTURE_FILES = {"resnet18.pth": _resnet18_weights}
RUN_DIR = re.compile(r"(?:^|=)(runs/[\w.-]+)/?$")


def _provision(paths: list[str], ws: Path, run: Path) -> None:
    """Run directories and files the example reads but the page has not written (see the module doc)."""
    for p in paths:
        m = RUN_DIR.search(p)
        if m and not (ws / m.group(1)).exists():
            shutil.copytree(run, ws / m.group(1))
        name = p.rpartition("=")[2]
        if name in FIXTURE_FILES and not (ws / name).exists():
            FIXTURE_FILES[name](ws / name)


# --- running a command --------------------------------------------------------------------------
def _main(argv: list[str]) -> tuple[int, str]:
    from reslab.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's own exits
            rc = e.code if isinstance(e.code, int) else 1
    return rc, buf.getvalue()


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _drop(argv: list[str], *names: str, values: int = 1) -> list[str]:
    """argv without the flags `names` and up to `values` values after each."""
    out, skip = [], 0
    for a in argv:
        if skip and not a.startswith("--"):
            skip -= 1
            continue
        skip = 0
        if a in names:
            skip = values
            continue
        out.append(a)
    return out


def _sets(argv: list[str]) -> set[str]:
    return {argv[i + 1].partition("=")[0] for i, a in enumerate(argv[:-1]) if a == "--set"}


def substitute(argv: list[str], ws: Path) -> tuple[list[str], list[list[str]]]:
    """(the command as the test runs it, commands to run before it): CLI_SUBSTITUTIONS."""
    verb, before = argv[0], []
    argv = [argv[0], *(a.lstrip("/") if a.startswith("/") else a for a in argv[1:])]
    data = _flag(argv, "--data")
    if verb in ("train", "experiment", "eval") and data is not None and _data_missing(data, ws):
        i = argv.index("--data")
        argv[i + 1] = "digits"
        if verb == "experiment" and "--out" not in argv:
            argv += ["--out", "runs/experiments-" + data.replace(":", "_").replace("/", "_")]
    if verb == "train" and "--resume" not in argv:
        argv = _drop(argv, "--epochs", "--iters") + ["--iters", ITERS, "--set", f"batch_size={BATCH}",
                                                     "--set", "workers=0", "--quiet"]
        if _flag(argv, "--preset") in ("paper-cifar", "fast-cifar") and "val_size" not in _sets(argv):
            argv += ["--set", "val_size=0.1"]
    elif verb == "experiment":
        name = argv[1]
        seeds = min(int(_flag(argv, "--seeds") or 1), 2)
        argv = _drop(argv, "--epochs", "--iters", "--seeds", "--jobs")
        argv += ["--seeds", str(seeds), "--jobs", "1", "--quiet"]
        if "--depths" not in argv:
            argv += ["--depths", *DEPTHS.get(name, DEFAULT_DEPTHS)]
        if name == "budget":
            argv = _drop(argv, "--budgets", values=99) + ["--budgets", ITERS, "6"]
        if name == "responses":
            out = _flag(argv, "--out") or "runs/experiments-digits"
            if not (ws / out / "runs").exists():
                before.append(["experiment", "degradation", "--data", "digits", "--iters", ITERS, "--set",
                               f"batch_size={BATCH}", "--out", out, "--quiet",
                               "--depths", *argv[argv.index("--depths") + 1:][:1]])
        else:
            argv += ["--iters", ITERS, "--set", f"batch_size={BATCH}"]
            if _flag(argv, "--preset") in ("paper-cifar", "fast-cifar") and "val_size" not in _sets(argv):
                argv += ["--set", "val_size=0.1"]
    elif verb == "demo":
        argv = _drop(argv, "--epochs") + ["--epochs", "1", "--quiet"]
        argv = _drop(argv, "--depths", values=2) + ["--depths", "8", "14"]
    elif verb == "bench":
        argv = _drop(argv, "--models", "--batch", "--repeats", "--peers") + [
            "--models", "resnet20", "--batch", "2", "--repeats", "1", "--no-latency", "--no-compile",
            "--peers", "none"]
    elif verb == "report" and "--limit" not in argv:
        argv += ["--limit", "20"]
    return argv, before


def _data_missing(data: str, ws: Path) -> bool:
    if data in DOWNLOADED:
        return True
    for prefix in ("imagefolder:", "shards:"):
        if data.startswith(prefix):  # an absolute path is the author's machine's, whatever is there here
            path = data[len(prefix):]
            return path.startswith("/") or not (ws / path).exists()
    return False


def _reads(argv: list[str]) -> list[str]:
    """The arguments that may name something to read: all but the values of --out."""
    return [a for i, a in enumerate(argv) if not (i and argv[i - 1] == "--out")]


def run_bash(ex: Example, ws: Path, run: Path) -> None:
    for words in _commands(ex.code):
        if words[0] == "reslab":
            argv = words[1:]
        elif words[:3] == ["python", "-m", "reslab"]:
            argv = words[3:]
        else:
            pytest.fail(f"{ex.where}: {shlex.join(words)!r} is not a reslab command; run it here or "
                        "mark the block with <!-- skip: REASON --> on the line before its fence")
        argv, before = substitute(argv, ws)
        if ex.exit == 0:
            _provision(_reads(argv), ws, run)
        for pre in before:
            rc, out = _main(pre)
            assert rc == 0, f"{ex.where}: `reslab {shlex.join(pre)}` (run first) exited {rc}:\n{out[-3000:]}"
        rc, out = _main(argv)
        assert rc == ex.exit, (f"{ex.where}: `{shlex.join(words)}`, run as `reslab {shlex.join(argv)}`, "
                               f"exited {rc}, not {ex.exit}:\n{out[-3000:]}")


def _commands(code: str) -> list[list[str]]:
    lines = code.replace("\\\n", " ").splitlines()
    return [w for w in (shlex.split(line, comments=True) for line in lines) if w]


def run_python(ex: Example, ws: Path, run: Path, namespace: dict) -> None:
    code = ex.code
    for pattern, replacement, _ in PY_SUBSTITUTIONS:
        code = re.sub(pattern, replacement, code)
    _provision(_python_reads(code), ws, run)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, ex.where, "exec"), namespace)
    except Exception as e:
        raise AssertionError(f"{ex.where}: the example raised {type(e).__name__}: {e}\n"
                             f"as run:\n{code}\noutput:\n{buf.getvalue()[-2000:]}") from e


def _python_reads(code: str) -> list[str]:
    """String constants of the code that may name a run to read: not the output of a train() call."""
    tree = ast.parse(code)
    outputs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "train":
            outputs.update(id(a) for a in node.args[1:2])
            outputs.update(id(k.value) for k in node.keywords if k.arg == "out")
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in outputs]


# --- the tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_examples_run(page, prebuilt, tmp_path, monkeypatch):
    """Every example of the page not marked skipped, in order, in one directory and namespace."""
    ws = _workspace(tmp_path / "ws")
    monkeypatch.chdir(ws)
    namespace: dict = {"__name__": "__docs_example__"}
    for ex in (e for e in RUN if e.page == page and e.skip is None):
        if ex.lang == "bash":
            run_bash(ex, ws, prebuilt)
        else:
            run_python(ex, ws, prebuilt, namespace)


@pytest.mark.parametrize("example", SKIPPED, ids=lambda ex: ex.where)
def test_skipped_example(example):
    """Examples marked `<!-- skip: REASON -->`: reported with their reason."""
    pytest.skip(f"{example.where}: {example.skip}")


def test_examples_are_collected():
    """The collector finds the examples (a changed fence syntax would otherwise run nothing)."""
    assert len(RUN) >= 40 and len(RUNNABLE_PAGES) >= 10
    assert {ex.page for ex in RUN} >= {"README.md", "docs/getting-started.md", "docs/inference.md"}


def test_fences_name_a_language_the_collector_knows():
    """A block in another language (```sh, or none) would never run: each is python, bash or text."""
    bad = [f"{ex.where} ({ex.lang or 'no language'})" for ex in ALL if ex.lang not in LANGUAGES]
    assert not bad, "fences must be ```python, ```bash or ```text: " + ", ".join(bad)


def test_skip_markers_give_a_reason():
    assert all(ex.skip.strip() for ex in SKIPPED)


def test_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the details belong in docs/"
    assert any("make test" in line for line in lines)  # CI and developers run the README's test command


# --- the generated reference pages --------------------------------------------------------------
def _hooks():
    """docs/hooks.py, the generator of the reference pages, as a module."""
    if "docs_hooks" not in sys.modules:
        spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["docs_hooks"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["docs_hooks"]


def test_cli_reference_names_every_command_and_flag():
    import argparse

    from reslab.cli import build_parser

    hooks = _hooks()
    page = hooks.cli_page()
    for name, _, parser in hooks._subcommands(build_parser()):
        assert f"## reslab {name} " in page
        section = page.split(f"## reslab {name} ", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for spelling in action.option_strings or [action.metavar or action.dest]:
                assert f"`{spelling}`" in section, f"reslab {name}: {spelling} missing from the CLI reference"


def test_config_reference_gives_every_field_a_default_and_meaning():
    from dataclasses import fields

    from reslab.train import TrainConfig

    hooks = _hooks()
    documented = {f.name: f for f in hooks.config_fields()}
    assert list(documented) == [f.name for f in fields(TrainConfig)]
    assert not [n for n, f in documented.items() if not f.meaning], \
        "fields without a comment in train/config.py (on their line, or the lines right above)"
    page = hooks.config_page()
    for f in documented.values():
        assert f'<a id="{f.name}"></a>`{f.name}` | `{f.type}` | `{hooks.set_value(f.default)}`' in page
    assert "`lr=0.2`" in page  # the presets' values (fast-cifar's peak lr)


def test_api_reference_covers_every_module():
    """Each public module and package of reslab has an API page, and the site's nav lists it."""
    hooks = _hooks()
    src = ROOT / "src" / "reslab"
    modules = {"reslab"} | {f"reslab.{p.stem}" for p in src.glob("*.py") if not p.name.startswith("_")} \
        | {f"reslab.{p.name}" for p in src.iterdir() if (p / "__init__.py").is_file()}
    modules -= {"reslab.cli", "reslab.demo"}  # the command line: the CLI reference documents them
    titled = {title for _, title, _ in hooks.API}
    assert modules <= titled, f"no API page for {sorted(modules - titled)} (docs/hooks.py API)"
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [page for page, _, _ in hooks.API if f"reference/api/{page}.md" not in nav]
    assert not missing, f"mkdocs.yml's nav lacks {missing}"


def test_site_builds_strictly(tmp_path):
    """`make docs`: a broken link or anchor, a missing reference or an unrenderable docstring fails."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]'; `make docs` installs it)")
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "api" / "models" / "index.html").is_file()
