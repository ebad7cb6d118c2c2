"""A model held by a replica, safe to evict while requests use it.

`serve.multiplexed` keeps a least-recently-used cache of the objects our loader returns and, on
eviction, awaits the object's `__del__` if it is a coroutine function, while holding its cache
lock. `LoadedModel` uses that hook to wait until every request that borrowed the model has given
it back before the weights are dropped, so a model is never cleared from under a running forward
pass; the next model loads only after that. The hook is an instance attribute on purpose: Python's
garbage collector calls only a class-level `__del__`, so collection never creates an un-awaited
coroutine.

A request borrows with `async with borrow(get_model, model_id) as loaded:`. Fast tokenizers must
not be used by two threads at once ("Already borrowed"), so every tokenizer call of a replica goes
through `loaded.tokenize` / `loaded.decode`, which share one lock per model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)


class Evicted(RuntimeError):
    """The model left the cache between lookup and borrowing; look it up again."""


class LoadedModel:
    """A model and its tokenizer as held by a replica, with a count of the requests using it."""

    def __init__(self, name: str, model: Any, tokenizer: Any):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.users = 0
        self.evicted = False
        self.tokenizer_lock = threading.Lock()
        self._idle = asyncio.Event()
        self._idle.set()
        self.__del__ = self._evict  # the eviction hook serve.multiplexed awaits (see the module doc)

    def acquire(self) -> None:
        """Count one more user; Evicted if eviction has begun."""
        if self.evicted:
            raise Evicted(self.name)
        self.users += 1
        self._idle.clear()

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self._idle.set()

    async def _evict(self) -> None:
        """Wait for in-flight users, then drop the weights (and the CUDA cache on a GPU)."""
        self.evicted = True
        if self.users:
            log.info("evicting %s: waiting for %d request(s) still using it", self.name, self.users)
        await self._idle.wait()
        model, self.model = self.model, None
        if model is not None and getattr(getattr(model, "device", None), "type", "cpu") == "cuda":
            import torch

            del model
            torch.cuda.empty_cache()

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        with self.tokenizer_lock:
            return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        with self.tokenizer_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)


@asynccontextmanager
async def borrow(get_model: Callable[[str], Awaitable[LoadedModel]], model_id: str) -> AsyncIterator[LoadedModel]:
    """The replica's model `model_id`, kept loaded until the block ends."""
    while True:
        loaded = await get_model(model_id)
        try:
            loaded.acquire()
            break
        except Evicted:
            await asyncio.sleep(0)  # its eviction is under way: the next lookup loads it again
    try:
        yield loaded
    finally:
        loaded.release()
