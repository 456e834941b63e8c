"""Fixtures shared across test files, and the test order under `make mutants`."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def pytest_collection_modifyitems(config, items):
    """Under mutmut (`make mutants`), a mutant's tests run fastest first (their times from mutmut's
    stats pass), so a killed mutant costs its cheapest failing test instead of a random one."""
    stats = Path("mutmut-stats.json")  # mutmut runs the tests from inside mutants/
    if not os.environ.get("MUTANT_UNDER_TEST", "").startswith("reslab.") or not stats.is_file():
        return
    seconds = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))


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
