"""Weights from torchvision, timm and the popular CIFAR projects into reslab models.

The post-activation ImageNet nets share torchvision's key names, so their
state dicts need no renaming: torchvision's and timm's `resnet*`, `resnext*`
and `wide_resnet*` weights load as they are. timm's pre-activation
`resnetv2_*` nets (no weight standardization) map onto `preact_resnet*`.

CIFAR checkpoints:
- akamaster/pytorch_resnet_cifar10 (`resnet20-12fca82f.th` ... `resnet1202-f3b1deed.th`):
  `{"state_dict": ...}` with a `module.` prefix and the head named `linear`; option-A
  shortcuts that pad the new channels on both sides: they load into `resnet20` ...
  `resnet1202` built with `shortcut_pad="both"` (a model without it is refused).
- chenyaofo/pytorch-cifar-models (`cifar10_resnet20` ... `cifar100_resnet56`): torchvision's
  key names with 1x1 projection shortcuts where the shape changes: they load into
  `resnet20` ... `resnet56` built with `shortcut="B"` (and `num_classes=100` for CIFAR-100).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from ..errors import ReslabError, torch_load
from .blocks import ShortcutA

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


class Converted(dict):
    """A state dict with reslab's key names, and where it came from (`origin`)."""

    origin: str = "reslab"

    def replace(self, changes: Mapping[str, Tensor]) -> Converted:
        """A copy with some tensors replaced, of the same origin."""
        out = Converted({**self, **changes})
        out.origin = self.origin
        return out


def _is_akamaster(state_dict: Mapping[str, Tensor]) -> bool:
    return "linear.weight" in state_dict and "layer1.0.conv1.weight" in state_dict


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> Converted:
    """A torchvision, timm, akamaster, chenyaofo or reslab state dict (of a bare, compiled or
    DDP model) with reslab's key names; `.origin` says which layout it had."""
    if isinstance(state_dict, Converted):
        return state_dict
    # "compressible_" prefixes the layers in some copies of akamaster's model file
    state_dict = {_strip_wrappers(k).replace("compressible_", ""): v for k, v in state_dict.items()}
    if _is_timm_v2(state_dict):
        out, out.origin = Converted(from_timm_v2(state_dict)), "timm-resnetv2"
    elif _is_akamaster(state_dict):
        out = Converted({("fc." + k[len("linear."):] if k.startswith("linear.") else k): v
                         for k, v in state_dict.items()})
        out.origin = "akamaster"
    else:
        out = Converted(state_dict)
    return out


def unwrap(obj: object) -> object:
    """The state dict inside a training checkpoint's dict ("state_dict" or "model"), else obj."""
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            return obj[key]
    return obj


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
    pads = {m.pad for m in model.modules() if isinstance(m, ShortcutA) and m.in_planes != m.out_planes}
    if state.origin == "akamaster" and pads != {"both"}:
        raise ReslabError("these weights come from akamaster/pytorch_resnet_cifar10, whose option-A shortcut pads the "
                          "new channels on both sides: build the model with shortcut_pad='both' "
                          "(--set model_args={\"shortcut_pad\":\"both\"})")
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
        hint = "are they for another architecture?"
        if any(".downsample." in k for k in unexpected) and pads:
            hint = "they have projection shortcuts: build the model with shortcut='B' (chenyaofo's CIFAR nets: B)"
        raise ReslabError(f"weights do not fit this model: {', '.join(parts)}; {hint}")
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
    obj = unwrap(torch_load(path, "weights file"))
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ReslabError(f"{path} does not hold a state dict of tensors")
    return dict(obj)
