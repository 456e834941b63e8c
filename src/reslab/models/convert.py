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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ReslabError
from .blocks import ShortcutA
from .registry import create_model, default_input_size, list_models

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


# A BatchNorm state saved before PyTorch 0.4.1 has no counter; torch's own loading starts it at 0.
BN_COUNTER = "num_batches_tracked"


def fit_weights(model: nn.Module, weights: Mapping[str, Tensor], strict: bool = True) -> nn.Module:
    """Loads a state dict of any known origin (see `convert_state_dict`) into `model`.

    Every key and shape must fit (with strict=True), but for the BatchNorm counters that files
    from before PyTorch 0.4.1 lack: those start at 0. A mismatch raises ReslabError naming the
    first differing keys, not a wall of text. Files are read by `reslab.load_weights`.
    """
    if not isinstance(model, nn.Module):
        raise ReslabError(f"load_weights takes a model (an nn.Module) first, got {type(model).__name__}")
    if not isinstance(weights, Mapping):
        raise ReslabError(f"weights must be a file path or a state dict, got {type(weights).__name__}")
    state = convert_state_dict(weights)
    pads = {m.pad for m in model.modules() if isinstance(m, ShortcutA) and m.in_planes != m.out_planes}
    if state.origin == "akamaster" and pads != {"both"}:
        raise ReslabError("these weights come from akamaster/pytorch_resnet_cifar10, whose option-A shortcut pads the "
                          "new channels on both sides: build the model with shortcut_pad='both' "
                          "(--set model_args={\"shortcut_pad\":\"both\"}), or call load_weights(path) alone")
    own = model.state_dict()
    counters = {k: torch.zeros_like(v) for k, v in own.items() if k.endswith("." + BN_COUNTER) and k not in state}
    missing = [k for k in own if k not in state and k not in counters]
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
    model.load_state_dict({**state, **counters}, strict=strict)
    return model


# --- which model a state dict is ----------------------------------------------------
@dataclass(frozen=True)
class Recognised:
    """The registered model (and overrides) whose every key and shape a state dict fits."""

    name: str
    args: dict[str, Any]
    family: str  # where files of this layout come from, in words


def _blocks(keys: set[str], stage: int) -> int:
    return len({k.split(".")[1] for k in keys if k.startswith(f"layer{stage}.")})


def _fits(name: str, args: dict[str, Any], state: Mapping[str, Tensor]) -> bool:
    try:
        with torch.device("meta"):
            own = create_model(name, **args).state_dict()
    except (ReslabError, TypeError, ValueError):
        return False
    own = {k: v for k, v in own.items() if not (k.endswith("." + BN_COUNTER) and k not in state)}
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def _candidates(keys: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """(registered name, overrides) that a state dict with these keys could be, by its layout."""
    bottleneck = "layer1.0.conv3.weight" in keys
    preact = "bn_final.weight" in keys
    if "layer4.0.conv1.weight" in keys:  # an ImageNet net: the registered names, each as it is
        return [(n, {}) for n in list_models() if default_input_size(n)[1] > 32]
    n = _blocks(keys, 1)
    depth = (9 if bottleneck else 6) * n + 2
    kinds = ["preact_resnet"] if preact else ["resnet", "plain"]
    out = []
    for kind in kinds:
        base = {"preact_resnet": "preact_resnet164" if bottleneck else "preact_resnet110"}.get(kind, f"{kind}20")
        name, extra = (f"{kind}{depth}", {}) if f"{kind}{depth}" in list_models() else (base, {"depth": depth})
        for shortcut in ({},) if kind == "plain" else ({}, {"shortcut": "B"}, {"shortcut": "C"}):
            out.append((name, {**extra, **shortcut}))
    return out


_NAME_IT = "name the model they are for (--model NAME; in Python load_weights(create_model(NAME, ...), path))"


def recognise(weights: Mapping[str, Tensor]) -> Recognised:
    """The model a torchvision, timm, akamaster, chenyaofo or reslab state dict is, from its keys
    and shapes alone; ReslabError (with the choices) when it fits none or several.

    Layouts that keys cannot tell apart are settled as their publishers made them: an ImageNet
    bottleneck net is torchvision's and timm's v1.5 (stride in the 3x3), not v1; akamaster's
    head names its files (option A padded on both sides). A CIFAR net without projections fits
    a ResNet (option A) and a plain net alike, and is refused.
    """
    state = convert_state_dict(weights)
    keys = set(state)
    if "conv1.weight" not in keys or "fc.weight" not in keys or "layer1.0.conv1.weight" not in keys:
        raise ReslabError(f"these weights are not a ResNet that reslab knows (no conv1, layer1 and fc/linear keys); "
                          f"{_NAME_IT}")
    head = {"num_classes": state["fc.weight"].shape[0], "in_chans": state["conv1.weight"].shape[1]}
    if state.origin == "akamaster":
        head["shortcut_pad"] = "both"
    candidates = _candidates(keys)
    if state.origin == "akamaster":  # their files are ResNets; a plain net takes no shortcut padding
        candidates = [(n, a) for n, a in candidates if n.startswith("resnet")]
    fits = [(n, {**a, **head}) for n, a in candidates if _fits(n, {**a, **head}, state)]
    if len(fits) > 1:  # keys cannot tell v1 from v1.5; torchvision and timm publish v1.5
        fits = [(n, a) for n, a in fits if not n.endswith("_v1")] or fits
    if not fits:
        raise ReslabError(f"these weights fit no registered model (a ResNet of another depth or width?); {_NAME_IT}")
    if len(fits) > 1:
        depth = fits[0][1].get("depth") or re.sub(r"\D", "", fits[0][0])
        choices = ", ".join(f"{n}({', '.join(f'{k}={v!r}' for k, v in a.items() if k not in head)})" for n, a in fits)
        raise ReslabError(f"these weights fit several {depth}-layer models, with the same keys and shapes: {choices}, "
                          f"or a ResNet with shortcut_pad='both'; {_NAME_IT}")
    name, args = fits[0]
    if state.origin == "akamaster":
        family = "akamaster/pytorch_resnet_cifar10"
    elif state.origin == "timm-resnetv2":
        family = "timm (resnetv2)"
    elif "layer4.0.conv1.weight" in keys:
        family = "torchvision or timm"
    elif args.get("shortcut") == "B":
        family = "chenyaofo/pytorch-cifar-models"
    else:
        family = "a bare state dict"
    with torch.device("meta"):  # the head sizes the model has anyway need not be stated
        plain = create_model(name)
    defaults = {"num_classes": plain.fc.out_features, "in_chans": plain.conv1.in_channels}
    return Recognised(name, {k: v for k, v in args.items() if defaults.get(k, object()) != v}, family)
