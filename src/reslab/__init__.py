"""reslab: deep residual networks and their family.

>>> import reslab
>>> model = reslab.create_model("resnet20")
>>> reslab.model_info("resnet50").params
25557032
"""

from . import data
from .errors import ReslabError
from .models import (
    BasicBlock,
    Bottleneck,
    CifarResNet,
    ModelInfo,
    PreActBasicBlock,
    PreActBottleneck,
    ResNet,
    ShortcutA,
    UnknownModelError,
    create_model,
    list_models,
    load_weights,
    model_info,
    register_model,
)

# reslab.optimize is the function; `from reslab.optimize import ...` still reaches the module.
from .optimize import optimize
from .runtime import tune_allocator
from .summary import summary
from .train import TrainConfig, preset  # the loop itself: from reslab.train import train

__version__ = "0.1.0"

__all__ = [
    "BasicBlock", "Bottleneck", "CifarResNet", "ModelInfo", "PreActBasicBlock",
    "PreActBottleneck", "ReslabError", "ResNet", "ShortcutA", "UnknownModelError",
    "TrainConfig", "create_model", "data", "list_models", "load_weights", "model_info", "optimize", "preset",
    "register_model", "summary", "tune_allocator",
]
