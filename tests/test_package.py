"""The package as it would be published: `python -m build` makes the sdist and the wheel, twine
accepts them, the metadata agrees with `reslab.__version__`, and the wheel installed into a fresh
virtual environment runs `reslab --version`, `reslab models` and a three-step `reslab train`.

The fresh environment gets reslab from the wheel alone; its dependencies (torch and the rest) come
from the environment running the tests, through a .pth file, so that nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel of a copy of the sources (the build leaves nothing in the checkout)."""
    missing = [m for m in ("build", "twine") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: pip install -e '.[dev]'")
    tmp = tmp_path_factory.mktemp("package")
    project = tmp / "project"
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in FILES:
        shutil.copy(ROOT / name, project / name)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(project)])
    return tmp / "dist"


def test_sdist_and_wheel_pass_twine_check(dist):
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"], files
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)])


def test_metadata_names_the_version_license_and_urls(dist):
    import reslab

    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(meta_name).decode())
        names = z.namelist()
    assert meta["Version"] == reslab.__version__
    assert wheel.name.startswith(f"reslab-{reslab.__version__}-")
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {u.split(",")[0] for u in meta.get_all("Project-URL")} >= {"Homepage", "Documentation", "Changelog"}
    assert "Programming Language :: Python :: 3" in meta.get_all("Classifier")
    assert meta["Description-Content-Type"] == "text/markdown"
    assert not [n for n in names if not n.startswith(("reslab/", "reslab-"))], "files outside the package"


def test_wheel_installs_and_runs_in_a_fresh_environment(dist, tmp_path):
    import reslab

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    Path(purelib, "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", RESLAB_DATA=str(tmp_path / "cache"))
    cli = str(venv / "bin" / "reslab")
    where = _run([str(python), "-c", "import reslab; print(reslab.__file__)"], env=env, cwd=tmp_path).stdout
    assert where.startswith(str(venv)), f"reslab imported from {where}, not from the installed wheel"
    assert _run([cli, "--version"], env=env, cwd=tmp_path).stdout.strip() == f"reslab {reslab.__version__}"
    assert "resnet20" in _run([cli, "models"], env=env, cwd=tmp_path).stdout
    _run([cli, "train", "--model", "resnet20", "--data", "digits", "--iters", "3", "--set", "batch_size=8",
          "--out", "run", "--quiet"], env=env, cwd=tmp_path)
    assert (tmp_path / "run" / "model.safetensors").is_file()
