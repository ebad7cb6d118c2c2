"""A model in use is never evicted from under a request (no Ray): eviction waits for borrowers."""

from __future__ import annotations

import asyncio
import inspect

from serve.loaded import LoadedModel, borrow


def test_eviction_waits_until_the_last_borrower_is_done():
    async def scenario() -> list[str]:
        log: list[str] = []
        cache = {"m": LoadedModel("m", model=object(), tokenizer=None)}

        async def get_model(model_id: str) -> LoadedModel:
            if model_id not in cache:
                cache[model_id] = LoadedModel(model_id, model=object(), tokenizer=None)
            return cache[model_id]

        async def use(delay: float) -> None:
            async with borrow(get_model, "m") as loaded:
                await asyncio.sleep(delay)
                log.append("used" if loaded.model is not None else "cleared under a request")

        users = [asyncio.create_task(use(d)) for d in (0.05, 0.1)]
        await asyncio.sleep(0.01)
        evicted = cache.pop("m")
        await evicted.__del__()  # what serve.multiplexed awaits on eviction
        log.append(f"evicted with {evicted.users} users, model {evicted.model}")
        await asyncio.gather(*users)
        async with borrow(get_model, "m") as again:  # a later request gets a fresh load
            log.append("reloaded" if again is not evicted and again.model is not None else "stale")
        return log

    assert asyncio.run(scenario()) == ["used", "used", "evicted with 0 users, model None", "reloaded"]


def test_the_eviction_hook_is_awaited_by_serve_but_never_run_by_garbage_collection():
    loaded = LoadedModel("m", model=object(), tokenizer=None)
    assert inspect.iscoroutinefunction(loaded.__del__)  # serve.multiplexed awaits coroutine hooks
    assert "__del__" not in vars(LoadedModel)  # Python's collector only calls a class-level __del__
