"""Checkpoints: atomic writes, digest-verified loads, the previous one kept, safe RNG round trip."""

import os
import random

import numpy as np
import pytest
import torch

from reslab.errors import ReslabError
from reslab.train.checkpoint import (
    load_checkpoint,
    payload_digest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def payload(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(64, 64, generator=g), "b": torch.zeros(64, dtype=torch.bfloat16)},
            "state": {"step": seed, "epoch": 1}, "classes": ["a", "b"], "mean": [0.5], "rng": rng_state()}


def test_round_trip_and_previous_kept(tmp_path):
    p = save_checkpoint(payload(1), tmp_path / "last.pt")
    save_checkpoint(payload(2), tmp_path / "last.pt")
    assert load_checkpoint(p)["state"]["step"] == 2
    prev = load_checkpoint(tmp_path / "prev.pt")
    assert prev["state"]["step"] == 1 and torch.equal(prev["model"]["w"], payload(1)["model"]["w"])
    assert load_checkpoint(tmp_path)["state"]["step"] == 2  # a run directory means its last.pt
    for step in (1, 2):  # other names keep <stem>.prev.pt; keep_previous=False keeps none
        save_checkpoint(payload(step), tmp_path / "best.pt")
        save_checkpoint(payload(step), tmp_path / "model.pt", keep_previous=False)
    assert load_checkpoint(tmp_path / "best.prev.pt")["state"]["step"] == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["best.prev.pt", "best.pt", "last.pt", "model.pt", "prev.pt"]
    nested = save_checkpoint(payload(3), tmp_path / "new" / "run" / "last.pt")  # folders made as needed
    assert load_checkpoint(nested)["state"]["step"] == 3


def test_flipped_byte_is_detected(tmp_path):
    p = save_checkpoint(payload(1), tmp_path / "last.pt")
    save_checkpoint(payload(2), tmp_path / "last.pt")
    data = bytearray(p.read_bytes())
    # torch's zip reader would load this silently: the byte sits inside the tensor data
    i = data.index(payload(2)["model"]["w"][10].numpy().tobytes()[:16])
    data[i + 3] ^= 0x40
    p.write_bytes(bytes(data))
    with pytest.raises(ReslabError, match=r"corrupt.*previous checkpoint is .*prev\.pt"):
        load_checkpoint(p)
    assert load_checkpoint(tmp_path / "prev.pt")["state"]["step"] == 1


def test_a_corrupt_checkpoint_without_a_previous_one_says_so_in_one_line(tmp_path):
    p = save_checkpoint(payload(1), tmp_path / "best.pt")
    data = bytearray(p.read_bytes())
    i = data.index(payload(1)["model"]["w"][10].numpy().tobytes()[:16])
    data[i + 3] ^= 0x40
    p.write_bytes(bytes(data))
    with pytest.raises(ReslabError) as e:
        load_checkpoint(p)
    assert str(e.value) == f"checkpoint {p} is corrupt: its SHA-256 does not match its contents"


def test_truncated_file_is_detected(tmp_path):
    p = save_checkpoint(payload(1), tmp_path / "best.pt")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ReslabError, match=r"^checkpoint .*best\.pt is corrupt or truncated"):
        load_checkpoint(p)


def test_map_location_reaches_torch_load(tmp_path):
    """torch.load's callable form of map_location sees every stored tensor (a GPU checkpoint
    opened on a CPU-only machine goes through the same argument)."""
    p = save_checkpoint(payload(1), tmp_path / "last.pt")
    seen = []

    def to_cpu(storage, location):
        seen.append(location)
        return storage

    loaded = load_checkpoint(p, map_location=to_cpu)
    assert seen and set(seen) == {"cpu"}
    assert torch.equal(loaded["model"]["w"], payload(1)["model"]["w"])


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    p = save_checkpoint(payload(1), tmp_path / "best.pt")
    before = p.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(payload(2), tmp_path / "best.pt")
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["best.pt"]  # no temporary left behind


def test_foreign_and_missing_files(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ReslabError, match="not a reslab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ReslabError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"format": "reslab-checkpoint-1", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ReslabError, match="holds Python objects besides tensors") as e:  # weights_only refuses it
        load_checkpoint(tmp_path / "evil.pt")
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)


def test_rng_states_round_trip():
    np.random.seed(0)  # no cached Gaussian (an earlier test may have left one) ...
    np.random.standard_normal()  # ... until this draw makes two and keeps the second: part of the state
    state = rng_state()
    assert state["numpy"]["has_gauss"] == 1
    assert state["numpy"]["key"].dtype == torch.int64  # the file format: numpy's uint32 key, exact
    a = (torch.rand(3), random.random(), np.random.standard_normal(), np.random.rand())
    set_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.standard_normal(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def written_as(version: str, contents: dict, path):
    """A file as a reslab writing format `version` left it (marker and digest)."""
    contents = {**contents, "format": version}
    torch.save({**contents, "sha256": payload_digest(contents)}, path)
    return path


def test_a_version_1_file_is_read_as_version_2(tmp_path):
    random.seed(3)
    state = rng_state()
    expected = random.random()
    version, internal, gauss = state["python"]  # the first runs kept it as nested lists
    v1 = {**payload(1), "rng": {**state, "python": [version, list(internal), gauss]}, "env": {"amp": "None"}}
    got = load_checkpoint(written_as("reslab-checkpoint-1", v1, tmp_path / "last.pt"))
    assert got["format"] == "reslab-checkpoint-2"
    assert got["env"] == {"loader": "memory", "amp": "None"}  # before the loader choice, runs were in memory
    assert torch.equal(got["model"]["w"], v1["model"]["w"]) and got["state"] == v1["state"]
    set_rng_state(got["rng"])
    assert random.random() == expected
    streamed = {**v1, "env": {"loader": "stream"}}
    assert load_checkpoint(written_as("reslab-checkpoint-1", streamed, tmp_path / "s.pt"))["env"] == {"loader": "stream"}
    assert load_checkpoint(save_checkpoint(payload(2), tmp_path / "new.pt"))["format"] == "reslab-checkpoint-2"


def test_a_later_version_is_refused_with_what_to_do(tmp_path):
    path = written_as("reslab-checkpoint-3", payload(1), tmp_path / "last.pt")
    with pytest.raises(ReslabError) as e:
        load_checkpoint(path)
    assert str(e.value) == (f"{path} is a version 3 checkpoint, written by a newer reslab; this one reads versions "
                            "1 to 2: upgrade reslab to read it")
    for marker in ("reslab-checkpoint-", "reslab-checkpoint-0", "reslab-checkpoint-01", "reslab-checkpoint-\u00b2",
                   "reslab-checkpoint-x", "reslab-shards-1"):
        with pytest.raises(ReslabError, match="not a reslab checkpoint"):
            load_checkpoint(written_as(marker, payload(1), tmp_path / "other.pt"))


def test_the_digest_encoding_is_fixed():
    # checkpoints written by an earlier reslab must verify in a later one: the canonical encoding
    # (tensors by dtype, shape and bytes; dicts by sorted keys; lists in order) may not drift
    fixed = {"model": {"w": torch.arange(6, dtype=torch.float32).view(2, 3),
                       "h": torch.tensor([1.5], dtype=torch.bfloat16), "e": torch.zeros(0)},
             "state": {"step": 3, "best": -1.0, "done": False}, "classes": ["a", "b"], "size": (32, 32)}
    want = "3e58cacf92ea498a71aade71633a20c6281615ffb49a16bd7c29dd6218582635"
    assert payload_digest(fixed) == payload_digest({**fixed, "sha256": "not part of it"}) == want
    # the same bytes under another dtype or shape, a renamed key, a nested list: other digests
    w = fixed["model"]["w"]
    variants = [{"w": w.view(torch.int32)}, {"w": w.view(3, 2)}, {"w2": w}, {"w": [w]}, {"w": [w, w]}]
    digests = {payload_digest({**fixed, "model": {**fixed["model"], **v}}) for v in variants}
    assert len(digests | {want}) == len(variants) + 1
    # optimizer state is keyed by parameter index: keys go in the order of their repr (10 before 2),
    # whatever order the dict holds them in, and int and str keys mix
    state = {2: {"m": torch.ones(1)}, 10: {"m": torch.zeros(1)}}
    mixed = {"optimizer": {"state": state}, "mixed": {1: "x", "a": "y"}}
    assert payload_digest(mixed) == payload_digest({"mixed": {"a": "y", 1: "x"},
                                                    "optimizer": {"state": dict(reversed(state.items()))}})
    assert payload_digest(mixed) == "6ed8e8768a2faad274e9d589d9696256272e7248c6ce80d29c477a8fbd1e9fbb"


def test_a_write_reaches_the_disk_before_it_replaces_the_old_file(tmp_path, monkeypatch):
    import stat
    import threading

    p = save_checkpoint(payload(1), tmp_path / "last.pt")
    synced, real_fsync, real_replace = [], os.fsync, os.replace

    me = threading.get_ident()  # calls from other threads (an earlier test's writers) are not this save's

    def fsync(fd):
        if threading.get_ident() == me:
            synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src, dst):
        if threading.get_ident() == me:
            synced.append(f"replace {os.path.basename(dst)}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(payload(2), p)
    # the new bytes synced, the old file kept as prev.pt, then swapped in; the directory synced last
    assert synced == ["file", "replace prev.pt", "replace last.pt", "dir"]


def test_the_previous_checkpoint_is_copied_where_hard_links_fail(tmp_path, monkeypatch):
    p = save_checkpoint(payload(1), tmp_path / "last.pt")
    first = p.read_bytes()

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    save_checkpoint(payload(2), p)
    assert (tmp_path / "prev.pt").read_bytes() == first and load_checkpoint(p)["state"]["step"] == 2
    assert sorted(f.name for f in tmp_path.iterdir()) == ["last.pt", "prev.pt"]


def test_cuda_rng_states_are_saved_and_restored(monkeypatch):
    # without a GPU here, torch.cuda's RNG calls are stood in for, to check what reaches them
    states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = rng_state()
    assert state["cuda"] is states
    set_rng_state(state)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], states, strict=True))
    set_rng_state({k: v for k, v in state.items() if k != "cuda"})  # a checkpoint written without a GPU
    assert len(restored) == 1


def test_a_checkpoint_without_a_runs_record_is_refused_in_one_line(tmp_path):
    from reslab.train.record import Checkpoint

    path = save_checkpoint(payload(1), tmp_path / "last.pt")  # tensors and a state, no run's record
    with pytest.raises(ReslabError) as e:
        Checkpoint.read(path)
    assert str(e.value) == (f"{path} is a checkpoint without a run's record "
                            "(missing config, model_name, model_args, std, image_size, env.loader)")
