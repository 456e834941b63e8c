"""Published dataset files: where they live, their checksums, atomic download.

A file is fetched from its mirrors in order into a temporary file beside the
target, hashed while it streams, and renamed into place only when it is
complete and its MD5 matches. An interrupted, truncated or corrupt transfer
therefore never leaves a file that looks valid. When every mirror fails, one
`ReslabError` line names the URL, the file to place by hand and the
directory to place it in.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_path
from ..errors import ReslabError

ENV_VAR = "RESLAB_DATA"
DEFAULT_DIR = "~/.cache/reslab"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One published file: its name on disk, MD5 and mirror URLs (tried in order)."""

    filename: str
    md5: str
    urls: tuple[str, ...]


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)


def _idx(mirrors: tuple[str, ...], files: dict[str, str]) -> tuple[Remote, ...]:
    return tuple(Remote(f, md5, tuple(m + f for m in mirrors)) for f, md5 in files.items())


# The checksums are the ones the dataset authors (and torchvision) publish.
RESOURCES: dict[str, tuple[Remote, ...]] = {
    "cifar10": (
        Remote("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
               ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),
    ),
    "cifar100": (
        Remote("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
               ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)),
    ),
    "mnist": _idx(_MNIST_MIRRORS, {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "fashion_mnist": _idx(_FASHION_MIRRORS, {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
}


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data directory: `root`, else $RESLAB_DATA, else ~/.cache/reslab (not created)."""
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_DIR
    return Path(root).expanduser()


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class _DownloadFailed(Exception):
    """One mirror failed; the message says how."""


def _fetch(url: str, tmp: Path, md5: str, timeout: float, progress: bool) -> None:
    """Stream `url` into `tmp`, checking the announced length and the MD5."""
    h = hashlib.md5(usedforsecurity=False)
    received, expected = 0, None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            length = r.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            bar = None
            if progress and sys.stderr.isatty():
                from tqdm import tqdm

                bar = tqdm(total=expected, unit="B", unit_scale=True, desc=Path(tmp).name, leave=False)
            while chunk := r.read(_CHUNK):
                f.write(chunk)
                h.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except urllib.error.HTTPError as e:
        raise _DownloadFailed(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _DownloadFailed(f"{url}: {e.reason}") from None
    except http.client.IncompleteRead:
        raise _DownloadFailed(f"{url}: truncated transfer ({received} of {expected} bytes)") from None
    except (OSError, http.client.HTTPException) as e:
        raise _DownloadFailed(f"{url}: {e.__class__.__name__}: {e}") from None
    if expected is not None and received != expected:
        raise _DownloadFailed(f"{url}: truncated transfer ({received} of {expected} bytes)")
    if h.hexdigest() != md5:
        raise _DownloadFailed(f"{url}: checksum mismatch (md5 {h.hexdigest()}, expected {md5})")


def _place_by_hand(remote: Remote, directory: Path) -> str:
    return (f"download {remote.urls[0]} by hand and place it at {directory / remote.filename} "
            f"(data directory: --data-dir or ${ENV_VAR}, default {DEFAULT_DIR})")


def download_file(remote: Remote, directory: str | os.PathLike, *, timeout: float = 60.0,
             progress: bool = True) -> Path:
    """Fetch `remote` into `directory` unless a file of that name is already there.

    Mirrors are tried in order. The file appears under its final name only
    when complete with the published MD5. Raises `ReslabError` naming every
    URL tried, the file to place by hand and the directory when all fail.
    """
    directory = Path(directory)
    target = directory / remote.filename
    if target.is_file():
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReslabError(f"cannot create the data directory {directory}: {e.strerror}; "
                          f"choose another with --data-dir or ${ENV_VAR}") from None
    failures = []
    for url in remote.urls:
        try:
            with atomic_path(target) as tmp:  # the file appears complete and checked, or not at all
                _fetch(url, tmp, remote.md5, timeout, progress)
            return target
        except _DownloadFailed as e:
            failures.append(str(e))
        except OSError as e:
            raise ReslabError(f"cannot write {target}: {e.strerror or e}; choose another data directory "
                              f"with --data-dir or ${ENV_VAR}") from None
    raise ReslabError(f"could not download {remote.filename} ({'; '.join(failures)}); "
                      + _place_by_hand(remote, directory))


def fetch(name: str, root: str | os.PathLike | None = None, download_missing: bool = True
          ) -> dict[str, Path]:
    """Paths of every published file of dataset `name`, downloading the missing ones.

    With `download_missing=False` a missing file raises `ReslabError` saying
    where to get it and where to put it.
    """
    directory = data_dir(root) / name
    remotes = RESOURCES[name]
    missing = [r for r in remotes if not (directory / r.filename).is_file()]
    for i, remote in enumerate(missing):
        also = ""
        if len(missing) > i + 1:
            also = f"; also needed there: {', '.join(r.filename for r in missing[i + 1:])}"
        if not download_missing:
            raise ReslabError(f"{remote.filename} is missing and download=False; "
                              + _place_by_hand(remote, directory) + also)
        try:
            download_file(remote, directory)
        except ReslabError as e:
            raise ReslabError(f"{e}{also}") from None
    return {r.filename: directory / r.filename for r in remotes}


def verify(path: Path, remote: Remote) -> None:
    """Raise `ReslabError` unless `path` has the published MD5 of `remote`."""
    actual = md5sum(path)
    if actual != remote.md5:
        raise ReslabError(f"{path} is not the published {remote.filename} (md5 {actual}, "
                          f"expected {remote.md5}); delete it so it is downloaded again, or "
                          + _place_by_hand(remote, path.parent))
