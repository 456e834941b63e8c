"""Checkpoints a user can trust: atomic writes, a content digest, safe loading.

- Written atomically: a temporary file in the same directory, fsync, then
  os.replace; a crash mid-write leaves the previous checkpoint untouched.
  Before `last.pt` is replaced, the old one becomes `prev.pt`.
- torch's zip format does not check its contents (a flipped byte inside a
  tensor loads silently), so each checkpoint carries a SHA-256 of everything
  in it; `load_checkpoint` recomputes it and refuses a mismatch.
- Loaded with `torch.load(weights_only=True)`: tensors and plain Python
  values only, no pickled code runs.
- Final weights are also written as safetensors (`export_safetensors`).
- Versioned: the `format` marker names what a file holds (`VERSION`); a file of an earlier
  version is read through the upgrades named by the version they read (`UPGRADES`), so every
  reader sees the current contents; a file of a later version is refused with what to do.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import ReslabError, torch_load
from ..rundir import RunDir, prev_path

MARKER = "reslab-checkpoint-"
# Version 2 holds the fields of train.record.Checkpoint, with env["loader"] always set and rng
# as rng_state() returns it.
VERSION = 2
FORMAT = f"{MARKER}{VERSION}"
DIGEST_KEY = "sha256"


def _digest(obj: Any, h: Any) -> None:
    """Feeds a canonical encoding of `obj` (tensors by dtype, shape and bytes) into `h`."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        # view as bytes: works for every dtype including bf16, which numpy lacks
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _digest(obj[k], h)
    elif isinstance(obj, list | tuple):
        h.update(b"L%d" % len(obj))
        for v in obj:
            _digest(v, h)
    else:
        h.update(repr(obj).encode())


def payload_digest(payload: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _digest({k: v for k, v in payload.items() if k != DIGEST_KEY}, h)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, keep_as: Path | None = None) -> None:
    """Writes `data` to `path` so that readers see the old file or the new one, never half.

    keep_as: once the new bytes are safely on disk, the old file (if any) is also kept under
    this name. It is hard-linked, not moved, so `path` exists at every moment.
    """
    with atomic_path(path, keep_as) as tmp:
        tmp.write_bytes(data)


def save_checkpoint(payload: dict[str, Any], path: str | Path, keep_previous: bool = True) -> Path:
    """Saves `payload` (tensors and plain values) atomically with its digest.

    keep_previous: an existing file at `path` is kept as `prev.pt`
    (`<stem>.prev.pt` for other names) once the new one is on disk, so one older good
    checkpoint survives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "format": FORMAT}
    payload[DIGEST_KEY] = payload_digest(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue(), keep_as=prev_path(path) if keep_previous else None)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads and verifies a checkpoint; a run directory means its `last.pt`.

    Raises ReslabError (one line) for a missing, truncated, corrupt or foreign file.

    A file of an earlier format version comes back upgraded to the current one; one of a later
    version is refused.
    """
    path = resolve_checkpoint(path)
    try:
        payload = torch_load(path, "checkpoint", map_location)
    except ReslabError as e:
        raise ReslabError(f"{e}{_prev_hint(path)}") from None
    version = format_version(payload)
    if version is None:
        raise ReslabError(f"{path} is not a reslab checkpoint (no '{MARKER}N' marker)")
    if version > VERSION:
        raise ReslabError(f"{path} is a version {version} checkpoint, written by a newer reslab; this one reads "
                          f"versions 1 to {VERSION}: upgrade reslab to read it")
    if payload.get(DIGEST_KEY) != payload_digest(payload):
        raise ReslabError(f"checkpoint {path} is corrupt: its SHA-256 does not match its contents{_prev_hint(path)}")
    for v in range(version, VERSION):  # (the digest stays the file's, verified above)
        payload = {**UPGRADES[v](payload), "format": f"{MARKER}{v + 1}"}
    return payload


def format_version(payload: Any) -> int | None:
    """The format version a loaded file's marker names; None for a file that is not a reslab checkpoint."""
    marker = payload.get("format") if isinstance(payload, dict) else None
    found = re.fullmatch(f"{MARKER}([1-9][0-9]*)", marker) if isinstance(marker, str) else None
    return int(found[1]) if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given; a run directory resolves to its `last.pt` (the resume point)."""
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).last
    if not path.exists():
        raise ReslabError(f"no checkpoint at {path}")
    return path


# --- earlier format versions ------------------------------------------------------
def from_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (reslab-checkpoint-1) as version 2. Runs from before the loader choice have no
    env["loader"]: they held their data in memory. The first runs kept Python's RNG state as
    nested lists; random.setstate wants tuples."""
    env = {"loader": "memory", **(payload.get("env") or {})}
    rng = payload.get("rng")
    if rng is not None:
        rng = {**rng, "python": _to_tuple(rng["python"])}
    return {**payload, "env": env, "rng": rng}


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


UPGRADES = {1: from_v1}  # version N's upgrade returns version N + 1's contents


def _prev_hint(path: Path) -> str:
    prev = prev_path(path)
    return f"; the previous checkpoint is {prev}" if prev.exists() else ""


# --- RNG states ----------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every RNG a training step can draw from, as tensors and plain values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy(), n["pos"], n["has_gauss"], n["gauss"]))  # int64 key, exact
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --- safetensors -----------------------------------------------------------------
def export_safetensors(state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Writes weights as safetensors (atomically); `metadata` values must be strings."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path
