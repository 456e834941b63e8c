"""Model registry: register_model, create_model, list_models, model_info."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from ..errors import ReslabError
from .flops import count_macs


class UnknownModelError(ReslabError, ValueError):
    """A model name that is not registered."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    reference: str


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is, measured on its default configuration.

    params: trainable parameters; macs: multiply-accumulates of one forward
    pass of one image at `input_size` (C, H, W), conv and linear layers.
    """

    name: str
    params: int
    macs: int
    input_size: tuple[int, int, int]
    reference: str
    num_classes: int


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, input_size: tuple[int, int, int], reference: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering `builder(**overrides) -> nn.Module` under `name`."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, builder, tuple(input_size), reference)
        return builder

    return wrap


def _entry(name: str) -> ModelEntry:
    if not isinstance(name, str):
        raise UnknownModelError(f"a model name is a string such as 'resnet50', got {name!r}")
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}{hint} (`reslab models` lists all {len(_REGISTRY)})"
        ) from None


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; `pattern` is a shell glob such as 'resnet*'."""
    names = sorted(_REGISTRY)
    if pattern:
        if not any(c in pattern for c in "*?["):
            pattern = f"*{pattern}*"
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def create_model(name: str, **overrides) -> nn.Module:
    """Builds a registered model; keyword arguments override its defaults.

    >>> create_model("resnet50", num_classes=10, drop_path_rate=0.1)
    """
    entry = _entry(name)
    try:
        return entry.builder(**overrides)
    except (TypeError, ValueError) as e:  # an unknown keyword, or a value the constructor refuses
        raise ReslabError(f"bad argument for model {name!r}: {e}") from None


def default_input_size(name: str) -> tuple[int, int, int]:
    return _entry(name).input_size


@cache
def model_info(name: str) -> ModelInfo:
    """Parameters and MACs of `name` at its default input size.

    Counted on the meta device: no memory is allocated and nothing computed,
    so even resnet1202 and resnext101 answer in well under a second.
    """

    entry = _entry(name)
    with torch.device("meta"):
        model = entry.builder()
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, (1, *entry.input_size), device="meta")
    return ModelInfo(name, params, macs, entry.input_size, entry.reference,
                     getattr(model, "num_classes", 0))
