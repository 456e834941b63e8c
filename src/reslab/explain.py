"""Grad-CAM (Selvaraju et al., ICCV 2017): where in an image a trained net found its class.

The last stage's feature maps A (N, C, h, w) are weighted by the spatial mean of the class
score's gradient with respect to them, summed over channels, passed through a ReLU and
upsampled to the image: (N, H, W) in [0, 1], 1 at each image's strongest evidence.

    reslab explain runs/r20 cat.jpg photos/ --out cams/   # one overlay PNG per image
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ReslabError
from .outputs import save_figure
from .predict import image_files, normalize, read_image
from .train.record import load_trained


def grad_cam(model: nn.Module, x: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """x: (N, C, H, W) normalized float -> (cams (N, H, W) in [0, 1], classes (N,) explained).

    target: the class to explain per image (default: the predicted one). The model needs
    `forward_features` and `forward_head`, as every reslab network has.
    """
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise ReslabError(f"{type(model).__name__} has no forward_features/forward_head to explain")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            features = model.forward_features(x.detach().requires_grad_(True))
            logits = model.forward_head(features)
            classes = logits.argmax(1) if target is None else target.to(logits.device)
            (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), features)
    finally:
        model.train(was_training)
    weights = grad.mean((2, 3), keepdim=True)
    cam = F.relu((weights * features.detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)
    return cam / peak, classes


def gradcam_figure(image: Tensor, cam: Tensor, left: str, right: str):
    """A matplotlib figure of two panels: the image, and the heat map over it.

    image: (C, H, W) uint8 (C = 1 or 3); cam: (h, w) in [0, 1], stretched over the image when
    its size differs; left, right: the panels' titles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape[-2:]
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    shown = image.permute(1, 2, 0).squeeze(-1).cpu().numpy()
    for ax in axes:
        ax.imshow(shown, cmap="gray" if image.shape[0] == 1 else None)
        ax.axis("off")
    axes[1].imshow(cam.cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    axes[0].set_title(left, fontsize=8)
    axes[1].set_title(right, fontsize=8)
    fig.tight_layout()
    return fig


def explain_files(checkpoint: str | Path, inputs: list[str | Path], out: str | Path,
                  target: str | None = None, device: str = "cpu") -> list[dict[str, Any]]:
    """Writes OUT/<image stem>-gradcam.png (the image, and the heat map over it) for each image;
    returns [{"file", "class", "prob", "png"}]. target: a class name to explain instead of the top one."""
    trained = load_trained(checkpoint, device)
    if target is not None and target not in trained.record.classes:
        raise ReslabError(f"unknown class {target!r}; this model's classes: {', '.join(trained.record.classes[:20])}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReslabError(f"{out} is a file; --out takes a directory for the images")
    results = []
    for path in image_files(inputs):
        image = read_image(path, trained.record.image_size, trained.record.loader == "stream")
        x = normalize(trained, image[None])
        wanted = None if target is None else torch.tensor([trained.record.classes.index(target)])
        cam, cls = grad_cam(trained.model, x, wanted)
        prob = F.softmax(trained.model(x).float(), 1)[0, cls[0]].item()
        name = trained.record.classes[cls[0].item()]
        fig = gradcam_figure(image, cam[0], path.name, f"Grad-CAM: {name} ({100 * prob:.1f}%)")
        png = save_figure(fig, out / f"{path.stem}-gradcam.png", "Grad-CAM image")
        results.append({"file": str(path), "class": name, "prob": round(prob, 6), "png": str(png)})
    return results
