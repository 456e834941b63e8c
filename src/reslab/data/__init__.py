"""Data: real datasets as uint8 tensors, decoded once, and fast batched loaders.

>>> from reslab.data import load, split, Loader
>>> train, val = split(load("digits"), val_size=0.1, seed=0)
>>> x, y = next(iter(Loader(train, batch_size=64)))
>>> x.shape, y.dtype
(torch.Size([64, 1, 8, 8]), torch.int64)
"""

from .._lazy import exports

_WHERE = {
    "DataWarning": ".datasets",
    "Dataset": ".datasets",
    "ImageFiles": ".streaming",
    "Loader": ".loader",
    "MissingSplitError": ".datasets",
    "Normalize": ".loader",
    "NAMES": ".datasets",
    "RESOURCES": ".download",
    "Remote": ".download",
    "STATS": ".datasets",
    "ShardLoader": ".shards",
    "ShardSplit": ".shards",
    "StreamingImageFolder": ".streaming",
    "StreamingLoader": ".streaming",
    "channel_stats": ".datasets",
    "data_dir": ".download",
    "decode_image": ".datasets",
    "download_file": ".download",
    "folder_files": ".streaming",
    "has_val_folder": ".datasets",
    "holdout": ".datasets",
    "imagefolder_path": ".datasets",
    "load": ".datasets",
    "open_split": ".shards",
    "scan_folder": ".datasets",
    "shards_path": ".datasets",
    "split": ".datasets",
    "streamed_split": ".shards",
    "write_shards": ".shards",
}
__getattr__, __dir__ = exports(__name__, _WHERE)

__all__ = [
    "NAMES", "RESOURCES", "STATS", "DataWarning", "Dataset", "ImageFiles", "Loader", "MissingSplitError",
    "Remote", "ShardLoader", "ShardSplit", "StreamingImageFolder", "StreamingLoader", "channel_stats", "data_dir",
    "decode_image", "download_file", "folder_files", "has_val_folder", "holdout", "imagefolder_path", "load",
    "open_split", "scan_folder", "shards_path", "split", "streamed_split", "write_shards",
]
