"""A torch-extension build killed mid-way leaves `<build dir>/lock`; the next build must not wait
for it forever, and a build that is really running must not lose its lock to a second one."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest
from torch.utils.file_baton import FileBaton

from pipeline.train.jit_ops import build_dir, exclusive_build, load_op

NAME = "kl_test_op"


def torch_style_build(folder: Path) -> str:
    """What torch's JIT build does around the compiler: take the baton, or wait for its holder."""
    baton = FileBaton(str(folder / "lock"), wait_seconds=0.01)
    if baton.try_acquire():
        try:
            return "built"
        finally:
            baton.release()
    baton.wait()
    return "waited"


@pytest.fixture
def extensions(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = build_dir(NAME)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_with_deadline(fn, seconds: float) -> list:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    return out


def test_build_dir_follows_torch_extensions_dir(extensions, tmp_path):
    assert extensions.parent == tmp_path and extensions.name == NAME


def test_a_lock_left_by_a_killed_build_hangs_an_unguarded_build(extensions):
    (extensions / "lock").touch()
    assert run_with_deadline(lambda: torch_style_build(extensions), 0.5) == []  # still waiting
    (extensions / "lock").unlink()  # lets the thread finish


def test_guarded_build_removes_a_stale_lock_and_builds(extensions, caplog):
    (extensions / "lock").touch()
    assert run_with_deadline(lambda: load_op(NAME, lambda: torch_style_build(extensions)), 10) == ["built"]
    assert not (extensions / "lock").exists()
    assert f"removing {extensions / 'lock'}" in caplog.text


def hold_a_running_build(started, release) -> None:
    with exclusive_build(NAME) as folder:
        (folder / "lock").touch()  # a build in progress
        started.set()
        release.wait(30)
        (folder / "lock").unlink()


def test_a_running_build_keeps_its_lock_and_the_next_one_waits_for_it(extensions):
    ctx = multiprocessing.get_context("spawn")  # the child inherits TORCH_EXTENSIONS_DIR
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=hold_a_running_build, args=(started, release))
    holder.start()
    try:
        assert started.wait(60)
        waiting = run_with_deadline(lambda: load_op(NAME, lambda: torch_style_build(extensions)), 0.5)
        assert waiting == [] and (extensions / "lock").exists()  # not taken from the live build
        release.set()
        t0 = time.monotonic()
        while not waiting and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        assert waiting == ["built"]
    finally:
        release.set()
        holder.join(30)
