"""reslab: deep residual networks and their family.

>>> import reslab
>>> model = reslab.create_model("resnet20")
>>> reslab.model_info("resnet50").params
25557032
"""

from ._lazy import exports

__version__ = "0.1.0"

_WHERE = {
    "BasicBlock": ".models",
    "Bottleneck": ".models",
    "CifarResNet": ".models",
    "ModelInfo": ".models",
    "PreActBasicBlock": ".models",
    "PreActBottleneck": ".models",
    "ResNet": ".models",
    "ReslabError": ".errors",
    "ShortcutA": ".models",
    "TrainConfig": ".train",
    "UnknownModelError": ".models",
    "create_model": ".models",
    # subpackages and modules, imported on first use: `reslab.train.preset`, `reslab.export.export_onnx`, ...
    **{name: "" for name in ("atomic", "backends", "bench", "data", "demo", "errors", "evaluate", "experiments", "explain",
                             "export", "launch", "models", "outputs", "predict", "quantize", "report", "rundir", "runtime",
                             "train", "weights")},
    "list_models": ".models",
    "load_weights": ".weights",
    "model_info": ".models",
    "optimize": ".optimize",
    "preset": ".train",
    "register_model": ".models",
    "summary": ".summary",
    "tune_allocator": ".runtime",
}
__getattr__, __dir__ = exports(__name__, _WHERE)

__all__ = [
    "BasicBlock", "Bottleneck", "CifarResNet", "ModelInfo", "PreActBasicBlock",
    "PreActBottleneck", "ReslabError", "ResNet", "ShortcutA", "UnknownModelError",
    "TrainConfig", "create_model", "data", "list_models", "load_weights", "model_info", "optimize", "preset",
    "register_model", "summary", "tune_allocator",
]
