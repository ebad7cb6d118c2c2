"""DeepSpeed's CPU communication op, compiled on first use without hanging after a killed build.

On CPU, `deepspeed.initialize` compiles its shared-memory op (`deepspeed_shm_comm`) into the
torch-extensions cache on first use. torch guards that build with a bare lock file
(`<build dir>/lock`, `torch.utils.file_baton.FileBaton`) that only the builder removes: a job
killed during the build (20-60 s on 2 cores) leaves it behind, and every later DeepSpeed start
on that machine then waits for it forever, silently. Here the op is loaded before
`deepspeed.initialize`, under an advisory `flock` that the kernel releases when its holder dies:
whoever holds it knows no process of ours is building, so a lock file it finds is stale and is
removed (with a warning naming it). The op is then cached in the process, so DeepSpeed's own
load returns at once. Ranks on one node wait for each other here, before any collective.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SHM_OP = "deepspeed_shm_comm"


def build_dir(name: str) -> Path:
    """torch's build folder for extension `name` (TORCH_EXTENSIONS_DIR or its default cache)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(name, verbose=False))


@contextlib.contextmanager
def exclusive_build(name: str) -> Iterator[Path]:
    """Hold the node-wide build lock of extension `name`, first removing a lock file that a
    killed build left; yields the build folder."""
    folder = build_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "owner.flock", "a") as owner:
        fcntl.flock(owner, fcntl.LOCK_EX)  # released on close, or by the kernel if we die
        stale = folder / "lock"
        if stale.exists():
            log.warning("removing %s: a build of %s was killed before it finished", stale, name)
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        try:
            yield folder
        finally:
            fcntl.flock(owner, fcntl.LOCK_UN)


def load_op(name: str, load: Callable[[], Any]) -> Any:
    """Run `load` (which compiles extension `name` if needed) under `exclusive_build`."""
    with exclusive_build(name):
        return load()


def load_shm_op() -> Any:
    """DeepSpeed's CPU shared-memory op (None where this accelerator has none), compiled safely."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.comm.torch import build_shm_op

    return load_op(SHM_OP, build_shm_op)
