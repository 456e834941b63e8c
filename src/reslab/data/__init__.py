"""Data: real datasets as uint8 tensors, decoded once, and fast batched loaders.

>>> from reslab.data import load, split, Loader
>>> train, val = split(load("digits"), val_size=0.1, seed=0)
>>> x, y = next(iter(Loader(train, batch_size=64)))
>>> x.shape, y.dtype
(torch.Size([64, 1, 8, 8]), torch.int64)
"""

from .datasets import (
    NAMES,
    STATS,
    Dataset,
    DataWarning,
    MissingSplitError,
    channel_stats,
    decode_image,
    holdout,
    load,
    scan_folder,
    split,
)
from .download import RESOURCES, Remote, data_dir, download_file
from .loader import Loader
from .streaming import StreamingImageFolder, StreamingLoader

__all__ = [
    "NAMES", "RESOURCES", "STATS", "DataWarning", "Dataset", "Loader", "MissingSplitError", "Remote",
    "StreamingImageFolder", "StreamingLoader", "channel_stats",
    "data_dir", "decode_image", "download_file", "holdout", "load", "scan_folder", "split",
]
