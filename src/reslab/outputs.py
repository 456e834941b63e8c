"""One rule for every file reslab writes on a user's request (exports, plots, JSON reports).

`output_file(path, suffixes, what)` refuses, in one line, a path that would replace
a file reslab did not write for this purpose: a directory, a run's own files
(checkpoints, config, metrics, weights), or an existing file of another kind (its
suffix is not one of `suffixes`). The new file is written beside the target under a
temporary name, flushed to disk and renamed over it, so a failed write (a full disk,
a read-only folder) leaves the old file as it was and no temporary file behind.

    with output_file("r20.onnx", (".onnx",), "ONNX file") as tmp:
        program.save(str(tmp))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .atomic import atomic_path
from .errors import ReslabError
from .rundir import TRAINING_FILES, RunDir


def check_output(path: str | Path, suffixes: tuple[str, ...], what: str) -> Path:
    """The output path, or a ReslabError saying why reslab will not write there."""
    path = Path(path)
    if path.is_dir():
        raise ReslabError(f"{path} is a directory; give a file name for the {what} (e.g. {path / ('out' + suffixes[0])})")
    if path.name in TRAINING_FILES and RunDir(path.parent).is_run():
        raise ReslabError(f"{path} belongs to the run in {path.parent}; write the {what} elsewhere")
    if path.exists() and path.suffix.lower() not in suffixes:
        raise ReslabError(f"{path} exists and is not a {what} ({' or '.join(suffixes)}); reslab does not replace it: "
                          "choose another name")
    if path.parent.exists() and not path.parent.is_dir():
        raise ReslabError(f"{path.parent} is a file, not a directory")
    return path


@contextlib.contextmanager
def output_file(path: str | Path, suffixes: tuple[str, ...], what: str) -> Iterator[Path]:
    """Yields a temporary path to write the file to; renames it over `path` when the block ends."""
    path = check_output(path, suffixes, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            yield tmp
    except OSError as e:
        raise ReslabError(f"cannot write {path}: {e.strerror or e}") from None


def write_text(path: str | Path, text: str, suffixes: tuple[str, ...], what: str) -> Path:
    with output_file(path, suffixes, what) as tmp:
        tmp.write_text(text)
    return Path(path)


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def check_plot(path: str | Path, what: str = "plot") -> Path:
    """`check_output` for a figure, whose format its suffix names: one of PLOT_SUFFIXES."""
    path = check_output(path, PLOT_SUFFIXES, what)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ReslabError(f"{path}: a {what} is written as {', '.join(PLOT_SUFFIXES)}; give a name ending in one")
    return path


def save_figure(fig, path: str | Path, what: str = "plot") -> Path:
    """Writes a matplotlib figure through `output_file` (the format from the suffix) and closes it."""
    import matplotlib.pyplot as plt

    try:
        check_plot(path, what)
        with output_file(path, PLOT_SUFFIXES, what) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return Path(path)
