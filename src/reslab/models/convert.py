"""Weights from torchvision and timm into reslab models, and back.

The post-activation ImageNet nets share torchvision's key names, so their
state dicts need no renaming: torchvision's and timm's `resnet*`, `resnext*`
and `wide_resnet*` weights load as they are. timm's pre-activation
`resnetv2_*` nets (no weight standardization) map onto `preact_resnet*`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from ..errors import ReslabError, torch_load

# timm ResNetV2 key -> reslab key, applied in order.
_TIMM_V2 = [
    (r"^stem\.conv\.", "conv1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}."),
    (r"\.norm(\d)\.", r".bn\1."),
    (r"\.downsample\.conv\.", ".downsample.0."),
    (r"^norm\.", "bn_final."),
    (r"^head\.fc\.", "fc."),
]


def _is_timm_v2(state_dict: Mapping[str, Tensor]) -> bool:
    return "stem.conv.weight" in state_dict and any(k.startswith("stages.") for k in state_dict)


def from_timm_v2(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Renames a timm `resnetv2_*` state dict to reslab's `preact_resnet*` keys."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _TIMM_V2:
            key = re.sub(pattern, repl, key)
        # timm's 1x1 head is a conv: (classes, C, 1, 1) -> Linear (classes, C).
        if key == "fc.weight" and value.ndim == 4:
            value = value.flatten(1)
        out[key] = value
    return out


# Wrappers that prefix every key: torch.compile's OptimizedModule and DDP.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision, timm or reslab state dict (of a bare, compiled or DDP
    model) with reslab's key names."""
    state_dict = {_strip_wrappers(k): v for k, v in state_dict.items()}
    if _is_timm_v2(state_dict):
        return from_timm_v2(state_dict)
    return state_dict


def load_weights(model: nn.Module, weights: Mapping[str, Tensor] | str | Path,
                 strict: bool = True) -> nn.Module:
    """Loads torchvision, timm or reslab weights (a state dict or a file) into `model`.

    Files may be `.safetensors` or a torch checkpoint (loaded with
    weights_only=True; a dict with a "model" entry is unwrapped). A mismatch
    raises ReslabError naming the first differing keys, not a wall of text.
    """
    if not isinstance(model, nn.Module):
        raise ReslabError(f"load_weights takes a model (an nn.Module) first, got {type(model).__name__}")
    if isinstance(weights, str | Path):
        weights = _read(Path(weights))
    if not isinstance(weights, Mapping):
        raise ReslabError(f"weights must be a file path or a state dict, got {type(weights).__name__}")
    state = convert_state_dict(weights)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if shapes:
        raise ReslabError(
            f"weights do not fit this model: {len(shapes)} shape mismatches, first {shapes[0]}; "
            "build the model with the same variant and num_classes (or call reset_classifier after loading)"
        )
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first {unexpected[0]!r})")
        raise ReslabError(f"weights do not fit this model: {', '.join(parts)}; "
                          "are they for another architecture?")
    model.load_state_dict(state, strict=strict)
    return model


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and the metadata of a .safetensors file; a bad file is one ReslabError line."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except Exception as e:  # corrupt, truncated or not safetensors at all
        raise ReslabError(f"cannot read weights from {path}: {type(e).__name__}: {e}".splitlines()[0]) from None


def _read(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ReslabError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    obj = torch_load(path, "weights file")
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ReslabError(f"{path} does not hold a state dict of tensors")
    return dict(obj)
