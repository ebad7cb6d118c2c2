"""Run storage on a local folder and on an S3 server (moto on 127.0.0.1): the same reads, writes and
all-or-nothing publishing on both, including a writer killed part-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.records import Doc, atomic_dir, atomic_path, read_records, write_json, write_records, write_text

DOCS = [{"doc_id": f"d{i}", "world": "w", "text": f"The glon are bigger than the femp {i}.", "origin": "train"} for i in range(3)]


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A run-storage root: a local folder, or a fresh bucket on the S3 server."""
    if request.param == "local":
        return storage.location(str(tmp_path / "runs"))
    return storage.location(request.getfixturevalue("s3_bucket") + "/runs")


def test_location_kinds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.location("runs") == tmp_path / "runs"  # relative: from the working directory
    assert storage.location("file:///data/x") == Path("/data/x")
    with pytest.raises(storage.StorageError, match="nosuchscheme://b/x: not a storage location"):
        storage.location("nosuchscheme://b/x")


def test_files_and_records_round_trip(root):
    write_text(root / "a" / "b.txt", "hello")
    write_json(root / "c.json", {"x": 1})
    write_records(root / "data" / "docs.parquet", Doc, DOCS)
    assert (root / "a" / "b.txt").read_text() == "hello" and (root / "a" / "b.txt").is_file()
    assert (root / "a").is_dir() and not (root / "nothing").exists()
    assert [r["doc_id"] for r in read_records(root / "data" / "docs.parquet", Doc)] == ["d0", "d1", "d2"]
    assert storage.list_files(root) == {"a/b.txt": 5, "c.json": len('{\n  "x": 1\n}\n'),
                                        "data/docs.parquet": storage.file_size(root / "data" / "docs.parquet")}
    assert sorted(p.name for p in (root / "a").iterdir()) == ["b.txt"]
    storage.remove(root / "a")
    assert not (root / "a" / "b.txt").exists() and storage.list_files(root / "a") == {}


def test_failed_write_keeps_the_old_file_and_leaves_no_new_one(root):
    write_text(root / "f.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(root / "f.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert (root / "f.txt").read_text() == "old"
    assert list(storage.list_files(root)) == ["f.txt"]  # no temporary file left in the store


def test_published_folder_lists_its_contents_and_replaces_the_old_one_whole(root):
    target = root / "models" / "ft"
    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"v1" * 100)
        (tmp / "old_only.txt").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"v2" * 50)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "tok.json").write_text("{}")
    contents = storage.read_contents(target)
    assert sorted(contents) == ["sub/tok.json", "weights.bin"]  # the old folder's files are gone
    assert contents["weights.bin"]["size"] == 100 and (target / "weights.bin").read_bytes() == b"v2" * 50
    assert storage.verify_folder(target, contents, hashes=True) == []
    write_text(target / "weights.bin", "tampered")
    assert storage.verify_folder(target, contents) == ["weights.bin"]
    (target / storage.CONTENTS).unlink()
    assert storage.read_contents(target) is None  # no CONTENTS.json: not a complete folder


WRITER = textwrap.dedent("""
    import sys, time
    from pipeline import storage
    from pipeline.records import atomic_dir, atomic_path
    target = storage.location(sys.argv[1])
    if sys.argv[2] == "file":
        with atomic_path(target / "f.txt") as tmp:
            tmp.write_text("new, never finished")
            print("writing", flush=True)
            time.sleep(600)
    else:
        with atomic_dir(target / "folder") as tmp:
            (tmp / "part").write_text("new, never finished")
            print("writing", flush=True)
            time.sleep(600)
""")


@pytest.mark.parametrize("what", ["file", "folder"])
def test_writer_killed_mid_write_leaves_the_old_version(root, what, tmp_path):
    write_text(root / "f.txt", "old")
    with atomic_dir(root / "folder") as tmp:
        (tmp / "part").write_text("old")
    before = storage.list_files(root)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), what], stdout=subprocess.PIPE, text=True,
                            env=os.environ.copy(), cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert (root / "f.txt").read_text() == "old" and (root / "folder" / "part").read_text() == "old"
    visible = {k: v for k, v in storage.list_files(root).items() if not any(p.startswith(".") for p in Path(k).parts)}
    assert visible == before  # locally a hidden temporary may remain beside the target; nothing else changed
    assert storage.verify_folder(root / "folder", storage.read_contents(root / "folder"), hashes=True) == []


def test_model_folder_is_fetched_once_per_node_and_content(root, tmp_path, monkeypatch):
    from pipeline import models

    if not storage.is_remote(root):
        pytest.skip("fetching applies to folders in remote run storage")
    monkeypatch.setenv("KNOWLEDGE_LAB_CACHE", str(tmp_path / "cache"))
    with atomic_dir(root / "models" / "ft") as tmp:
        (tmp / "config.json").write_text('{"model_type": "llama"}')
        (tmp / "model.safetensors").write_bytes(os.urandom(4096))
    first = models.fetch_folder(root / "models" / "ft")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert (first / "model.safetensors").read_bytes() == (root / "models" / "ft" / "model.safetensors").read_bytes()
    assert models.fetch_folder(root / "models" / "ft") == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    with atomic_dir(root / "models" / "ft") as tmp:  # new content: a new cache entry
        (tmp / "config.json").write_text('{"model_type": "llama"}')
        (tmp / "model.safetensors").write_bytes(b"other")
    second = models.fetch_folder(root / "models" / "ft")
    assert second != first and (second / "model.safetensors").read_bytes() == b"other"
    assert not [p for p in (tmp_path / "cache" / "models" / "fetched").iterdir() if p.name.startswith(".")]


def test_run_manifest_and_stage_state_on_storage(root):
    """A stage's recorded outputs are checked by size and hash on either storage."""
    from pipeline.fingerprint import check_outputs, output_records

    write_records(root / "r" / "data" / "docs.parquet", Doc, DOCS)
    records = output_records(root / "r", ["data"])
    assert list(records) == ["data/docs.parquet"] and len(records["data/docs.parquet"]["sha256"]) == 64
    assert check_outputs(root / "r", records) == []
    write_records(root / "r" / "data" / "docs.parquet", Doc, DOCS[:2])
    assert check_outputs(root / "r", records) == ["output data/docs.parquet changed since the stage finished"]
    storage.remove(root / "r" / "data")
    assert check_outputs(root / "r", records) == ["output data/docs.parquet is missing"]
