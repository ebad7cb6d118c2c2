"""The C allocator of a training worker on CPU: keep freed memory for the next step.

glibc's malloc serves a large block (above its mmap threshold, 128 KiB at first and at most 32 MiB)
with a fresh `mmap` and unmaps it on `free`; it trims the top of its heap once enough is free
there; and in any thread but the main one, whose arena heaps are at most 64 MiB, it maps every
block larger than that anew, whatever the settings. A training step on CPU allocates and frees
hundreds of megabytes (activations, logits over the vocabulary, gradients, the embedding's dense
gradient of 113 MB for the 135M model), so with the defaults each step faults that memory in again
and the kernel zeroes every new page first: about 140,000 page faults a step for the 135M model at
the demo's batches, a fifth of its time. A Ray Train worker runs the training loop in a thread of
its own, so it meets the 64 MiB limit too.

`worker_env()` is the environment that turns this off for a CPU training worker's process, set at
its start through Ray Train's `worker_runtime_env` (glibc reads `GLIBC_TUNABLES` only then): one
arena for every thread (the main one, which grows its heap without that limit), no `mmap` per
block, no trimming. Freed memory then stays in the heap and the next step reuses it; the process
keeps its peak memory until it exits, which a training worker reaches on every step anyway.
Measured in docs/benchmarks.md ("The allocator").

GPU fits keep glibc's defaults (their steps allocate on the device; one arena for a process with
many host threads was not measured there). `KNOWLEDGE_LAB_KEEP_FREED_MEMORY=0`, or a
`GLIBC_TUNABLES` of the user's own, leaves CPU workers as they are too. Elsewhere than glibc (musl,
macOS) the variable means nothing.
"""

from __future__ import annotations

import os

ENV = "KNOWLEDGE_LAB_KEEP_FREED_MEMORY"
#: free bytes at the top of the heap before glibc gives them back: never, in practice
TRIM_THRESHOLD = 2**31 - 1
TUNABLES = f"glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"


def worker_env(use_gpu: bool = False) -> dict[str, str]:
    """Environment variables for a training worker's process (empty for a GPU fit, where turned off,
    or where the driver's environment already sets `GLIBC_TUNABLES`)."""
    if use_gpu or os.environ.get(ENV, "1") == "0" or "GLIBC_TUNABLES" in os.environ:
        return {}
    return {"GLIBC_TUNABLES": TUNABLES}
