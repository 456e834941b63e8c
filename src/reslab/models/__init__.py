"""Residual networks: blocks, the two network classes, the registry."""

from . import zoo  # noqa: F401  (registers every named model)
from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ShortcutA
from .convert import fit_weights, recognise
from .norm import BatchNorm2d, batch_norm_train, compiled_batchnorm
from .registry import (
    ModelInfo,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
)
from .resnet import CifarResNet, ResNet

__all__ = [
    "BasicBlock", "BatchNorm2d", "Bottleneck", "CifarResNet", "ModelInfo", "PreActBasicBlock",
    "PreActBottleneck", "ResNet", "ShortcutA", "UnknownModelError", "create_model",
    "list_models", "batch_norm_train", "compiled_batchnorm", "fit_weights", "model_info", "recognise",
    "register_model",
]
