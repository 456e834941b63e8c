"""Fixtures shared across test files."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def noise_folder(tmp_path, monkeypatch):
    """make(classes, per_class, side) -> an image folder of random RGB PNGs; the array cache goes to tmp_path."""
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "cache"))

    def make(classes=("a", "b"), per_class=8, side=32):
        rng = np.random.default_rng(0)
        root = tmp_path / "imgs"
        for cls in classes:
            (root / cls).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
        return root

    return make
