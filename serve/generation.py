"""Generation requests and results around `serve.decoding.Decoder` (pure torch, no Ray).

A request's prompt is text (tokenized with the model's tokenizer) or token ids (used as given, as
OpenAI's API allows). `chunks(...)` yields, per step, one `Chunk` per request (None once that
request is done); `fold` turns a request's chunks into its `GenerationResult`. `generate_batch`
does both for a whole batch: the replica streams the same chunks instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from serve.decoding import Chunk, Decoder, SamplingParams, TokenLogprob


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue."""

    prompt: str | tuple[int, ...]
    params: SamplingParams
    #: False for chat prompts: the chat template already wrote the special tokens.
    add_special_tokens: bool = True


@dataclass
class GenerationResult:
    text: str = ""
    finish_reason: str | None = None  # "stop": end token or stop string; "length": max_tokens reached
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_ids: list[int] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None


def fold(chunks: list[Chunk]) -> GenerationResult:
    """The result a request's chunks add up to."""
    out = GenerationResult()
    for c in chunks:
        out.text += c.text
        out.token_ids += c.token_ids
        out.logprobs += c.logprobs
        out.finish_reason = c.finish_reason or out.finish_reason
        out.prompt_tokens = c.prompt_tokens or out.prompt_tokens
        out.completion_tokens = max(out.completion_tokens, c.completion_tokens)
        if c.prompt_ids is not None:
            out.prompt_ids = c.prompt_ids
        if c.prompt_logprobs is not None:
            out.prompt_logprobs = c.prompt_logprobs
    return out


def end_token_ids(model, tokenizer) -> set[int]:
    """Tokens that end a generation: the tokenizer's and the model's end-of-sequence tokens."""
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return {i for i in ids if i is not None}


def make_decoder(model, tokenizer, requests: list[GenerationRequest],
                 tokenize: Callable[[str, bool], list[int]] | None = None,
                 decode: Callable[[list[int]], str] | None = None) -> Decoder:
    """A Decoder for these requests; `tokenize`/`decode` default to the tokenizer's own (a replica
    passes locked ones, see `serve.loaded`)."""
    tokenize = tokenize or (lambda text, special: list(tokenizer(text, add_special_tokens=special)["input_ids"]))
    decode = decode or (lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    prompts = [list(r.prompt) if not isinstance(r.prompt, str) else tokenize(r.prompt, r.add_special_tokens)
               for r in requests]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return Decoder(model, prompts, [r.params for r in requests], decode, end_token_ids(model, tokenizer), pad)


def chunks(decoder: Decoder) -> Iterator[list[Chunk | None]]:
    """The prefill's chunks, then each step's, until every request is done."""
    yield decoder.prefill()
    while not decoder.done:
        yield decoder.step()


def generate_batch(model, tokenizer, requests: list[GenerationRequest]) -> list[GenerationResult]:
    """Continue every prompt; results come back in request order."""
    per_request: list[list[Chunk]] = [[] for _ in requests]
    for step in chunks(make_decoder(model, tokenizer, requests)):
        for k, chunk in enumerate(step):
            if chunk is not None:
                per_request[k].append(chunk)
    return [fold(c) for c in per_request]
