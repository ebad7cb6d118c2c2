"""OpenAI-compatible completions and chat: a request body becomes a `Plan` (one generation request
per choice), and generated results or chunks become OpenAI's response and chunk objects.

Choices are numbered as OpenAI numbers them: prompt i, sample j -> index i * n + j. With a seed,
sample j is seeded with seed + j, so the n samples differ and each is reproducible. Log-probs come
in OpenAI's two shapes: the legacy completions one (`{tokens, token_logprobs, top_logprobs,
text_offset}`, `echo` puts the prompt's tokens first, the first having null) and the chat one
(`{content: [{token, logprob, bytes, top_logprobs}]}`). Token strings are each token decoded on its
own, special tokens included; text offsets count from the start of the choice's text.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from serve.decoding import Chunk, SamplingParams, TokenLogprob
from serve.generation import GenerationRequest, GenerationResult
from serve.openai_schemas import ChatCompletionRequest, CompletionRequest, SamplingFields


@dataclass
class Plan:
    """What one OpenAI request asks of the generator, and how its answer is shaped."""

    chat: bool
    model: str
    requests: list[GenerationRequest]
    n: int
    logprobs: bool
    echo: list[str] = field(default_factory=list)  # per choice: prompt text shown before the completion
    include_usage: bool = False
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    def envelope(self, choices: list[dict], usage: dict | None, chunk: bool = False) -> dict:
        kind = "chat.completion.chunk" if chunk and self.chat else self.object
        body = {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}
        if not chunk or self.include_usage:
            body["usage"] = usage
        return body


def _params(body: SamplingFields, max_tokens: int, j: int, logprobs: int | None, echo: int | None) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens, temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, stop=body.stop_strings(),
        seed=None if body.seed is None else body.seed + j, presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0, logprobs=logprobs, prompt_logprobs=echo)


def completion_plan(body: CompletionRequest, max_tokens: int, prompt_texts: list[str]) -> Plan:
    """`prompt_texts`: each prompt as text (token-id prompts decoded), shown when echo is set."""
    n = body.n or 1
    echo = body.logprobs if body.echo else None  # echo without logprobs shows the prompt's text only
    requests, shown = [], []
    for prompt, text in zip(body.prompts(), prompt_texts, strict=True):
        for j in range(n):
            requests.append(GenerationRequest(prompt, _params(body, max_tokens, j, body.logprobs, echo)))
            shown.append(text if body.echo else "")
    return Plan(False, body.model, requests, n, body.logprobs is not None, shown, body.include_usage())


def chat_plan(body: ChatCompletionRequest, max_tokens: int, prompt: str) -> Plan:
    n = body.n or 1
    k = (body.top_logprobs or 0) if body.logprobs else None
    requests = [GenerationRequest(prompt, _params(body, max_tokens, j, k, None), add_special_tokens=False)
                for j in range(n)]
    return Plan(True, body.model, requests, n, bool(body.logprobs), [""] * n, body.include_usage())


class Logprobs:
    """Formats one choice's log-probs, chunk after chunk (text offsets carry on)."""

    def __init__(self, chat: bool, token_text: Callable[[int], str]):
        self.chat, self.token_text, self.offset = chat, token_text, 0

    def format(self, ids: list[int], entries: list[TokenLogprob | None]) -> dict:
        if self.chat:
            return {"content": [self._chat_entry(e) for e in entries if e is not None]}
        tokens, values, tops, offsets = [], [], [], []
        for token_id, e in zip(ids, entries, strict=True):
            text = self.token_text(token_id)
            tokens.append(text)
            offsets.append(self.offset)
            self.offset += len(text)
            values.append(None if e is None else e.logprob)
            if e is None:
                tops.append(None)
            else:
                top = {self.token_text(t): lp for t, lp in e.top}
                top.setdefault(text, e.logprob)
                tops.append(top)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

    def _chat_entry(self, e: TokenLogprob) -> dict:
        def one(token_id: int, logprob: float) -> dict:
            text = self.token_text(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        return {**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}


def usage(prompt_tokens: list[int], completion_tokens: list[int], n: int) -> dict:
    """OpenAI's usage: each prompt counted once (not once per sample), every completion token."""
    prompt = sum(prompt_tokens[::n])
    completion = sum(completion_tokens)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def response(plan: Plan, results: list[GenerationResult], token_text: Callable[[int], str]) -> dict:
    """The whole (non-streamed) response."""
    choices = []
    for index, (r, echo) in enumerate(zip(results, plan.echo, strict=True)):
        logprobs = None
        if plan.logprobs:
            ids, entries = r.token_ids, list(r.logprobs)
            if echo and r.prompt_logprobs is not None:
                ids, entries = r.prompt_ids + ids, list(r.prompt_logprobs) + entries
            logprobs = Logprobs(plan.chat, token_text).format(ids, entries)
        choice = {"index": index, "finish_reason": r.finish_reason, "logprobs": logprobs}
        if plan.chat:
            choice["message"] = {"role": "assistant", "content": r.text}
        else:
            choice["text"] = echo + r.text
        choices.append(choice)
    counts = usage([r.prompt_tokens for r in results], [r.completion_tokens for r in results], plan.n)
    return plan.envelope(choices, counts)


def chunk_choice(plan: Plan, index: int, chunk: Chunk, first: bool, logprobs: Logprobs) -> dict | None:
    """One streamed choice delta, or None when the chunk carries nothing to show."""
    text, ids, entries = chunk.text, chunk.token_ids, list(chunk.logprobs)
    if first and plan.echo[index]:
        text = plan.echo[index] + text
        if chunk.prompt_logprobs is not None:
            ids, entries = (chunk.prompt_ids or []) + ids, list(chunk.prompt_logprobs) + entries
    if not (text or chunk.finish_reason or (plan.logprobs and entries) or (first and plan.chat)):
        return None
    out: dict = {"index": index, "finish_reason": chunk.finish_reason,
                 "logprobs": logprobs.format(ids, entries) if plan.logprobs and entries else None}
    if plan.chat:
        out["delta"] = {"role": "assistant", "content": text} if first else {"content": text}
    else:
        out["text"] = text
    return out
