"""Token-by-token decoding of a batch of prompts with one Hugging Face causal LM (pure torch).

`Decoder` prefills the left-padded batch once, then `step()` runs one forward pass over the rows
still generating (finished rows leave the KV cache) and returns one `Chunk` per row: the new
token, the text it completes, its log-probability and top alternatives. A row ends at an end
token, a stop string (checked incrementally, `serve.text`) or max_tokens. Each row has its own
sampling settings: temperature (0: greedy), top_p, OpenAI's presence and frequency penalties
(logit adjustments by the row's generated-token counts) and a seed (its own random generator, so a
seeded row samples the same tokens alone or in a batch).

Reported log-probabilities are the model's own (log-softmax of its logits), before penalties,
temperature and top_p, as vLLM reports them by default; `prompt_logprobs` adds them for the
prompt's tokens (OpenAI's `echo`), the first token having none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from serve.text import IncrementalDetokenizer, StopMatcher


@dataclass(frozen=True)
class SamplingParams:
    """How one row is continued."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: alternatives reported per generated token; None: no log-probs at all
    logprobs: int | None = None
    #: alternatives reported per prompt token (echo); None: no prompt log-probs
    prompt_logprobs: int | None = None


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, log-prob), most likely first


@dataclass
class Chunk:
    """What one row produced in one step (the first chunk of a row comes from the prefill)."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (end token or stop string) or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_ids: list[int] | None = None  # first chunk only
    prompt_logprobs: list[TokenLogprob | None] | None = None  # first chunk, echo only


class _Row:
    def __init__(self, prompt: list[int], params: SamplingParams, decode, device):
        self.prompt, self.params = prompt, params
        self.detok = IncrementalDetokenizer(decode, prompt)
        self.stops = StopMatcher(params.stop)
        self.generated = 0
        self.finished = False
        self.counts: dict[int, int] = {}
        self.rng = None
        if params.seed is not None and params.temperature > 0:
            self.rng = torch.Generator(device=device).manual_seed(params.seed)


def _top(logprobs: torch.Tensor, token_id: int, k: int | None) -> TokenLogprob:
    top = ()
    if k:
        values, ids = torch.topk(logprobs, k)
        top = tuple(zip(ids.tolist(), values.tolist()))
    return TokenLogprob(token_id, float(logprobs[token_id]), top)


class Decoder:
    """Generates a batch of prompts (token ids) step by step; see the module doc."""

    def __init__(self, model, prompts: list[list[int]], params: list[SamplingParams], decode, end_ids: set[int],
                 pad_id: int):
        self.model, self.end_ids, self.pad_id = model, end_ids, pad_id
        self.device = next(model.parameters()).device
        self.rows = [_Row(p, s, decode, self.device) for p, s in zip(prompts, params, strict=True)]
        self.active: list[int] = []  # batch position -> row, for rows still in the KV cache
        self.cache = self.mask = self.positions = self.logits = None

    @property
    def done(self) -> bool:
        return all(r.finished for r in self.rows)

    @torch.inference_mode()
    def prefill(self) -> list[Chunk]:
        """Encode every prompt; one chunk per row with its prompt count (and echo log-probs)."""
        width = max(len(r.prompt) for r in self.rows)
        ids = torch.tensor([[self.pad_id] * (width - len(r.prompt)) + r.prompt for r in self.rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in self.rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        echo = any(r.params.prompt_logprobs is not None for r in self.rows)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=0 if echo else 1)
        chunks = []
        for i, row in enumerate(self.rows):
            chunk = Chunk(prompt_tokens=len(row.prompt), prompt_ids=list(row.prompt))
            if row.params.prompt_logprobs is not None:
                chunk.prompt_logprobs = self._prompt_logprobs(out.logits[i], row, width)
            if row.params.max_tokens == 0:
                row.finished, chunk.finish_reason = True, "length"
            chunks.append(chunk)
        self.active = [i for i, r in enumerate(self.rows) if not r.finished]
        keep = torch.tensor(self.active, device=self.device)
        self.cache, self.mask, self.positions = out.past_key_values, mask, positions[:, -1]
        self.logits = out.logits[:, -1].float()
        if len(self.active) < len(self.rows) and self.active:
            self._keep(keep)
        return chunks

    def _prompt_logprobs(self, logits: torch.Tensor, row: _Row, width: int) -> list[TokenLogprob | None]:
        start = width - len(row.prompt)
        logprobs = torch.log_softmax(logits[start:width - 1].float(), dim=-1)
        return [None] + [_top(logprobs[j], t, row.params.prompt_logprobs) for j, t in enumerate(row.prompt[1:])]

    def _keep(self, keep: torch.Tensor) -> None:
        self.cache.batch_select_indices(keep)
        self.mask, self.positions, self.logits = self.mask[keep], self.positions[keep], self.logits[keep]

    @torch.inference_mode()
    def step(self) -> list[Chunk | None]:
        """One token for every unfinished row (None for rows that had finished before)."""
        chunks: list[Chunk | None] = [None] * len(self.rows)
        logprobs = torch.log_softmax(self.logits, dim=-1)
        tokens = []
        for b, i in enumerate(self.active):
            token = self._choose(self.rows[i], self.logits[b], logprobs[b])
            tokens.append(token)
            chunks[i] = self._emit(self.rows[i], token, logprobs[b])
        still = [b for b, i in enumerate(self.active) if not self.rows[i].finished]
        if still:
            if len(still) < len(self.active):
                self._keep(torch.tensor(still, device=self.device))
                tokens = [tokens[b] for b in still]
                self.active = [self.active[b] for b in still]
            self._forward(tokens)
        else:
            self.active, self.cache = [], None
        return chunks

    def _choose(self, row: _Row, logits: torch.Tensor, logprobs: torch.Tensor) -> int:
        p = row.params
        if row.counts and (p.presence_penalty or p.frequency_penalty):
            ids = torch.tensor(list(row.counts), device=logits.device)
            counts = torch.tensor(list(row.counts.values()), device=logits.device, dtype=logits.dtype)
            logits = logits.clone()
            logits[ids] -= p.presence_penalty + p.frequency_penalty * counts
        if p.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / p.temperature, dim=-1)
        if p.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p  # keeps at least the top token
            probs = probs.clone()
            probs[order[outside]] = 0
        return int(torch.multinomial(probs, 1, generator=row.rng))

    def _emit(self, row: _Row, token: int, logprobs: torch.Tensor) -> Chunk:
        row.generated += 1
        row.counts[token] = row.counts.get(token, 0) + 1
        chunk = Chunk(token_ids=[token], prompt_tokens=len(row.prompt))
        if row.params.logprobs is not None:
            chunk.logprobs = [_top(logprobs, token, row.params.logprobs)]
        if token in self.end_ids:
            chunk.finish_reason, chunk.text = "stop", row.stops.push(row.detok.flush())
        else:
            chunk.text = row.stops.push(row.detok.push(token))
            if not row.stops.stopped and row.generated >= row.params.max_tokens:
                chunk.text += row.stops.push(row.detok.flush())
                chunk.finish_reason = "length"
        if row.stops.stopped:
            chunk.finish_reason = "stop"
        elif chunk.finish_reason is not None:
            chunk.text += row.stops.flush()
        row.finished = chunk.finish_reason is not None
        chunk.completion_tokens = row.generated
        return chunk

    def _forward(self, tokens: list[int]) -> None:
        ids = torch.tensor(tokens, device=self.device)[:, None]
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.positions = self.positions + 1
        out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=self.positions[:, None],
                         past_key_values=self.cache, use_cache=True)
        self.cache, self.logits = out.past_key_values, out.logits[:, -1].float()
