"""The training worker's malloc settings (pipeline.allocator): on by default for CPU fits, off on
request, and never over a user's own GLIBC_TUNABLES."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline import allocator


def test_a_worker_gets_the_settings_by_default(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert allocator.worker_env() == {"GLIBC_TUNABLES": allocator.TUNABLES}
    settings = dict(part.split("=") for part in allocator.TUNABLES.split(":"))
    assert settings == {"glibc.malloc.arena_max": "1", "glibc.malloc.mmap_max": "0",
                        "glibc.malloc.trim_threshold": str(2**31 - 1)}


def test_gpu_fits_turned_off_or_the_users_own_tunables_leave_the_worker_alone(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(allocator.ENV, raising=False)
    assert allocator.worker_env(use_gpu=True) == {}
    monkeypatch.setenv(allocator.ENV, "0")
    assert allocator.worker_env() == {}
    monkeypatch.setenv(allocator.ENV, "1")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    assert allocator.worker_env() == {}


CHURN = """
import resource, threading
def churn():
    for _ in range(6):
        block = bytearray(96 << 20)  # 96 MiB, above a thread arena's 64 MiB heaps; zeroed, so touched
        del block
thread = threading.Thread(target=churn)  # a Ray Train worker trains in a thread of its own
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
thread.start(); thread.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(tunables: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", CHURN], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_with_the_settings_a_thread_reuses_freed_memory_instead_of_faulting_it_in_again():
    """Six 96 MiB blocks allocated and freed in turn by a thread: glibc's defaults map each one anew
    (24,576 pages each, faulted in again); with the settings the heap keeps the first for the rest."""
    pages = (96 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert page_faults(None) > 5 * pages
    assert page_faults(allocator.TUNABLES) < 2 * pages
