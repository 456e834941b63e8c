"""The error type for bad user input: the CLI prints its message as one line."""

from __future__ import annotations

from os import PathLike
from typing import Any


class ReslabError(Exception):
    """Bad input from a user (a name, a file, a shape, a setting).

    The message says what is wrong and what to do; the CLI prints it as one
    line and exits with status 2 instead of showing a traceback.
    """


def is_whole(value: Any, at_least: int = 0) -> bool:
    """`value` is a whole number (an int, not a bool) of at least `at_least`: the check every
    count a user sets (workers, shard sizes, classes, steps) passes before it is used."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= at_least


def torch_load(path: str | PathLike, what: str = "file", map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; a failure is one ReslabError line.

    The line tells a file that is not in torch.save's format (truncated,
    corrupt, another format) from one that pickles Python objects, which
    reslab never loads (unpickling them can run code).
    """
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        if not zipfile.is_zipfile(path):
            raise ReslabError(f"{what} {path} is corrupt or truncated, or not a file torch.save wrote") from None
        if isinstance(e, pickle.UnpicklingError):
            raise ReslabError(f"{what} {path} holds Python objects besides tensors and plain values, which "
                              "reslab does not load (that can run code); save a state_dict instead: "
                              "torch.save(model.state_dict(), path)") from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ReslabError(f"{what} {path} is corrupt or truncated ({first})") from None
