"""Files written whole or not at all, under names no other writer shares; adapter folders hashed once per change."""

import json
import os
import threading

import pytest

from llmrec.assets import atomic_save, atomic_write_text, cached_folder_hash, folder_hash


def test_two_threads_writing_one_file_never_leave_it_torn_or_missing_or_leave_temp_files(tmp_path):
    target = tmp_path / "manifest.json"
    bodies = {name: json.dumps({"writer": name, "payload": name * 200_000}) for name in "ab"}
    seen, stop = [], threading.Event()

    def write(name):
        for _ in range(25):
            atomic_write_text(target, bodies[name])

    def read():
        while not stop.is_set():
            if target.exists():
                seen.append(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(name,)) for name in "ab"]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert target.read_text() in bodies.values()
    assert seen and all(text in bodies.values() for text in seen)  # never a mix of the two, never half of one
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left behind


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "scenario.json"
    atomic_write_text(target, "old")

    def fail(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["scenario.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)  # not mkstemp's 0600


def test_the_scenario_and_item_vector_writers_use_no_fixed_temp_name(tmp_path, monkeypatch):
    """`scenario.json.tmp` and `<key>.partial.npy` were shared by every writer: a second writer (here a folder
    squatting on the name) broke the write. Now each write has its own temp name."""
    import numpy as np

    from llmrec.engines import encoder
    from llmrec.scenario import Scenario, save_scenario
    from llmrec.testing import movie

    path = save_scenario(Scenario(name="mine", dataset="ml-100k", domain="movie"), tmp_path)
    (path.parent / "scenario.json.tmp").mkdir()
    save_scenario(Scenario(name="mine", dataset="ml-100k", domain="movie"), tmp_path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["scenario.json", "scenario.json.tmp"]

    monkeypatch.setattr(encoder, "_encode", lambda model, texts, config, progress, lora: np.ones((len(texts), 3), np.float32))
    items, config = [movie(1), movie(2)], encoder.ItemEncoderConfig()
    encoder.item_vectors("no-such-model", items, tmp_path, config, progress=False)
    [written] = (tmp_path / "item-vectors").iterdir()
    written.unlink()
    (written.parent / (written.stem + ".partial.npy")).mkdir()
    again = encoder.item_vectors("no-such-model", items, tmp_path, config, progress=False)
    assert again.matrix.shape == (2, 3) and np.load(written).shape == (2, 3)
    assert sorted(p.name for p in written.parent.iterdir()) == sorted([written.name, written.stem + ".partial.npy"])


def test_an_adapter_folder_is_hashed_again_only_when_a_file_changes(tmp_path, monkeypatch):
    from llmrec import assets

    (tmp_path / "adapter_model.safetensors").write_bytes(b"w" * 1000)
    (tmp_path / "adapter_config.json").write_text("{}")
    reads = []
    monkeypatch.setattr(assets, "folder_hash", lambda path, pattern="*": reads.append(path) or folder_hash(path, pattern))
    first = cached_folder_hash(tmp_path)
    assert cached_folder_hash(tmp_path) == first and len(reads) == 1
    (tmp_path / "adapter_model.safetensors").write_bytes(b"v" * 1000)
    stat = (tmp_path / "adapter_model.safetensors").stat()
    os.utime(tmp_path / "adapter_model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = cached_folder_hash(tmp_path)
    assert second != first and second == folder_hash(tmp_path) and len(reads) == 2
