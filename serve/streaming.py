"""Server-sent events for streamed completions and chats, in OpenAI's chunk format.

Each choice is one streaming call to the generator (`handle.options(stream=True)`), yielding
`Chunk`s as tokens are decoded. `open_streams` waits for every choice's first chunk (the prefill)
before the HTTP response starts, so a request that fails early (model not loadable) still gets a
proper error status; the choices' later chunks are merged in arrival order. The stream ends with
`data: [DONE]`, after a usage chunk (empty choices) when `stream_options.include_usage` is set.
A failure after the response has started is sent as a last `data: {"error": ...}` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator, Callable

from serve.decoding import Chunk
from serve.openai_api import Logprobs, Plan, chunk_choice, usage

log = logging.getLogger(__name__)
_DONE = object()


def sse(data: dict | str) -> bytes:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


async def open_streams(streams: list) -> list[Chunk]:
    """The first chunk of every stream (errors raise here, before any byte is sent)."""
    return list(await asyncio.gather(*(anext(s) for s in streams)))


async def _merge(streams: list) -> AsyncIterator[tuple[int, Chunk]]:
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(k: int, stream) -> None:
        try:
            async for chunk in stream:
                await queue.put((k, chunk))
            await queue.put((k, _DONE))
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which reports it
            await queue.put((k, err))

    tasks = [asyncio.create_task(pump(k, s)) for k, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            k, item = await queue.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield k, item
    finally:
        for task in tasks:
            task.cancel()


async def events(plan: Plan, firsts: list[Chunk], streams: list,
                 token_text: Callable[[int], str]) -> AsyncIterator[bytes]:
    """The SSE byte stream of a plan whose streams have been opened (`open_streams`)."""
    formatters = [Logprobs(plan.chat, token_text) for _ in firsts]
    prompt_tokens = [c.prompt_tokens for c in firsts]
    completion_tokens = [c.completion_tokens for c in firsts]
    try:
        for k, chunk in enumerate(firsts):
            if (choice := chunk_choice(plan, k, chunk, True, formatters[k])) is not None:
                yield sse(plan.envelope([choice], None, chunk=True))
        live = [s for c, s in zip(firsts, streams) if c.finish_reason is None]
        index = [k for k, c in enumerate(firsts) if c.finish_reason is None]
        async for j, chunk in _merge(live):
            k = index[j]
            completion_tokens[k] = max(completion_tokens[k], chunk.completion_tokens)
            if (choice := chunk_choice(plan, k, chunk, False, formatters[k])) is not None:
                yield sse(plan.envelope([choice], None, chunk=True))
        if plan.include_usage:
            yield sse(plan.envelope([], usage(prompt_tokens, completion_tokens, plan.n), chunk=True))
    except Exception as err:  # noqa: BLE001 - the status line is sent already: report in the stream
        cause = getattr(err, "cause", None) or err
        log.error("stream %s failed: %s: %s", plan.id, type(cause).__name__, cause)
        yield sse({"error": {"message": f"internal error: {type(cause).__name__}: {cause}"[:2000],
                             "type": "server_error", "param": None, "code": None}})
    yield sse("[DONE]")
