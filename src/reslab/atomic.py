"""The one atomic write of reslab: a file (or a directory) appears whole or not at all.

    with atomic_path("runs/r20/summary.json") as tmp:
        tmp.write_text(text)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_as: str | Path | None = None) -> Iterator[Path]:
    """The one atomic write of reslab: yields a temporary path beside `path` (same suffix, so
    writers that pick a format by suffix pick the right one) to write a file or a directory
    into; when the block ends it is flushed to disk, renamed over `path` and the rename made
    durable (the directory's entry synced). Readers see the old `path` or the new, never half;
    a failure leaves the old one and no temporary file. OSError passes to the caller.

    keep_as: once the new bytes are on disk, the old file (if any) is also kept under this name,
    hard-linked (copied where links fail), so that `path` exists at every moment.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    _remove(tmp)
    try:
        yield tmp
        for f in (sorted(tmp.iterdir()) if tmp.is_dir() else [tmp]):
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        if keep_as is not None and path.exists():
            kept = Path(keep_as).with_name(f".{Path(keep_as).name}.tmp{os.getpid()}")
            _remove(kept)
            try:
                os.link(path, kept)
            except OSError:  # file systems without hard links
                import shutil

                shutil.copyfile(path, kept)
            os.replace(kept, keep_as)
        os.replace(tmp, path)  # a directory only where `path` is none yet
        _fsync_dir(path.parent)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync directories
        pass
    finally:
        os.close(fd)
