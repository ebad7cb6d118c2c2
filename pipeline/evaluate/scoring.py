"""The one scoring rule: summed log-probability of each choice's tokens after the item's prompt.

Pure torch (no Ray, no I/O); the offline evaluator and the Serve evaluator both call
`score_items`. Conventions follow lm-eval-harness:

- the choice is joined to the prompt with a single space, unless the prompt already ends in
  whitespace or the choice already starts with it (the leading space belongs to the choice);
- whitespace at the end of the context moves to the start of the continuation;
- the context is tokenized alone, then context + continuation; the continuation's tokens are
  the tail of the joint encoding beyond the context's token count;
- the model reads (context + continuation)[:-1]; the log-probs of the continuation tokens are
  summed. acc takes the argmax of the sums, acc_norm the argmax of sum / len(choice) in chars.

A `Prefix` (the ICL context) is encoded once with its KV cache; every batch gets a fresh cache
made from it (never mutated), so items see exactly the tokens prefix + context + continuation.
On full-attention models a batch is packed into one sequence (after a single copy of the prefix
cache): each item's context appears once and each choice is a branch after it, kept apart by
the attention mask and position ids, so neither the prefix nor the prompt is recomputed per
choice and nothing is padded. With `reuse_prefix_cache=False` every sequence is encoded in full
(prefix, context, choice) as a padded batch, lm-eval style: the reference the packed path is
checked and benchmarked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class ScoringError(ValueError):
    """An item that cannot be scored; the message names its item_id."""


@dataclass(frozen=True)
class Prefix:
    """A shared context: its token ids and its per-layer (keys, values) at batch size 1."""

    ids: tuple[int, ...]
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def num_tokens(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Request:
    """One (item, choice) sequence: the model reads context + continuation."""

    item: int
    choice: int
    context: tuple[int, ...]
    continuation: tuple[int, ...]


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def start_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a text that starts a sequence: BOS first if the tokenizer adds one by default
    (and the text does not already start with it, as chat templates often do)."""
    ids = _encode(tokenizer, text)
    bos = tokenizer.bos_token_id
    default = list(tokenizer("a")["input_ids"])
    if bos is not None and default and default[0] == bos and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def join_choice(prompt: str, choice: str) -> str:
    """The continuation as scored: the choice, with a leading space unless one is already there."""
    if prompt[-1:].isspace() or choice[:1].isspace():
        return choice
    return " " + choice


def encode_pair(tokenizer, context: str, continuation: str, starts: bool) -> tuple[list[int], list[int]]:
    """lm-eval's split: trailing context whitespace moves to the continuation; the continuation's
    tokens are the joint encoding's tail beyond the context's own token count."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    encode = (lambda t: start_ids(tokenizer, t)) if starts else (lambda t: _encode(tokenizer, t))
    whole = encode(context + continuation)
    context_ids = encode(context)
    return context_ids, whole[len(context_ids):]


def check_item(item: dict) -> None:
    """The minimum an item needs to be scored; errors name the item_id."""
    item_id = item.get("item_id", "<no item_id>")
    prompt, choices = item.get("prompt"), item.get("choices")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ScoringError(f"item {item_id!r}: prompt is empty")
    if not isinstance(choices, (list, tuple)) or len(choices) < 2:
        raise ScoringError(f"item {item_id!r}: needs at least 2 choices, has {len(choices or [])}")
    if any(not isinstance(c, str) or not c.strip() for c in choices):
        raise ScoringError(f"item {item_id!r}: a choice is empty")
    answer = item.get("answer_index")
    if answer is not None and not 0 <= answer < len(choices):
        raise ScoringError(f"item {item_id!r}: answer_index {answer} out of range for {len(choices)} choices")


def item_requests(tokenizer, items: list[dict], *, after_prefix: bool) -> list[Request]:
    """Every (item, choice) sequence of a list of items, checked and tokenized."""
    out = []
    for i, item in enumerate(items):
        check_item(item)
        for j, choice in enumerate(item["choices"]):
            ctx, cont = encode_pair(tokenizer, item["prompt"], join_choice(item["prompt"], choice), not after_prefix)
            if not ctx or not cont:
                what = "prompt" if not ctx else f"choice {j} ({choice!r})"
                raise ScoringError(f"item {item.get('item_id')!r}: {what} encodes to no tokens")
            out.append(Request(i, j, tuple(ctx), tuple(cont)))
    return out


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def encode_prefix(model, tokenizer, text: str) -> Prefix:
    """Encode a shared context once; its KV cache is reused by every batch scored after it."""
    ids = start_ids(tokenizer, text)
    if not ids:
        raise ScoringError("prefix text encodes to no tokens")
    out = model(input_ids=torch.tensor([ids], device=_model_device(model)), use_cache=True, logits_to_keep=1)
    kv = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
    return Prefix(tuple(ids), kv)


def packable(model) -> bool:
    """Whether every layer attends to the full context, so a batch can be packed into one
    sequence with a custom mask (sliding-window and hybrid models take the padded path)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layer_types = getattr(config, "layer_types", None) or []
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    return not sliding and all(t == "full_attention" for t in layer_types)


def _packed_logits(model, prefix: Prefix | None, requests: list[Request], device) -> list[torch.Tensor]:
    """A batch as one sequence (after one copy of the prefix cache, if any): each item's context
    once, then each choice's tokens as a branch that sees the prefix, its item's context and its
    own earlier tokens. Returns each request's logits at its continuation positions."""
    ids, pos, group_of, branch_of, keep = [], [], [], [], []
    groups: dict[tuple, tuple[int, int]] = {}  # (item, context) -> (group id, index of its last context token)
    for r in requests:
        key = (r.item, r.context)
        if key not in groups:
            ids += r.context
            pos += range(len(r.context))
            group_of += [len(groups)] * len(r.context)
            branch_of += [-1] * len(r.context)
            groups[key] = (len(groups), len(ids) - 1)
        group, last = groups[key]
        first = len(ids)
        ids += r.continuation[:-1]
        pos += range(len(r.context), len(r.context) + len(r.continuation) - 1)
        group_of += [group] * (len(r.continuation) - 1)
        branch_of += [r.choice] * (len(r.continuation) - 1)
        keep += [last] + list(range(first, len(ids)))
    pos_t, group_t, branch_t = torch.tensor(pos), torch.tensor(group_of), torch.tensor(branch_of)
    allowed = (group_t[:, None] == group_t[None, :]) & (pos_t[None, :] <= pos_t[:, None]) & (
        (branch_t[None, :] == -1) | (branch_t[None, :] == branch_t[:, None]))
    kwargs = {"use_cache": False}
    offset = 0
    if prefix is not None:
        from transformers import DynamicCache

        offset = prefix.num_tokens
        allowed = torch.cat([torch.ones((len(ids), offset), dtype=torch.bool), allowed], dim=1)
        kwargs = {"use_cache": True, "past_key_values": DynamicCache(list(prefix.kv), config=model.config)}  # a fresh copy
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    logits = model(input_ids=torch.tensor([ids], device=device), attention_mask=mask[None, None].to(device),
                   position_ids=(pos_t + offset)[None].to(device), logits_to_keep=torch.tensor(keep, device=device),
                   **kwargs).logits[0]
    return list(torch.split(logits, [len(r.continuation) for r in requests]))


def _padded_logits(model, prefix: Prefix | None, reuse: bool, requests: list[Request], pad: int, device) -> list[torch.Tensor]:
    """The rows as a right-padded batch: alone, after a re-encoded prefix, or after the prefix
    cache expanded over the batch. Returns each row's logits at its continuation positions."""
    rows = [list(r.context + r.continuation)[:-1] for r in requests]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):  # right padding: real tokens keep their positions
        ids[b, :len(row)] = torch.tensor(row)
        mask[b, :len(row)] = 1
    ids, mask = ids.to(device), mask.to(device)
    first = min(len(r.context) - 1 for r in requests)  # the LM head runs from the first continuation on
    keep = width - first
    if prefix is None:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
    else:
        from transformers import DynamicCache

        mask = torch.cat([torch.ones((len(rows), prefix.num_tokens), dtype=torch.long, device=device), mask], dim=1)
        if reuse:
            cache = DynamicCache([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in prefix.kv],
                                 config=model.config)
            logits = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=keep).logits
        else:
            full = torch.cat([torch.tensor([prefix.ids], device=device).expand(len(rows), -1), ids], dim=1)
            logits = model(input_ids=full, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
    starts = [len(r.context) - 1 - first for r in requests]
    return [logits[b, s:s + len(r.continuation)] for b, (s, r) in enumerate(zip(starts, requests))]


@torch.inference_mode()
def score_batch(model, requests: list[Request], prefix: Prefix | None = None, reuse: bool = True, pad: int = 0) -> list[float]:
    """Summed continuation log-probs of one forward batch (the prefix, if any, read first: from
    its cache when `reuse`, else re-encoded for every row)."""
    device = _model_device(model)
    if (prefix is None or reuse) and packable(model):
        per_row = _packed_logits(model, prefix, requests, device)
    else:
        per_row = _padded_logits(model, prefix, reuse, requests, pad, device)
    sums = []
    for r, logits in zip(requests, per_row):
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        target = torch.tensor(r.continuation, device=device)
        sums.append(float(logprobs.gather(1, target[:, None]).sum()))
    return sums


def encoded_tokens(requests: list[Request]) -> int:
    """Tokens the model must read to score these requests: each item's context once (its choices
    share it) and each choice's continuation but its last token, which is only predicted. The
    packed path reads exactly these; the padded path (sliding-window models) reads each context
    once per choice, so the cost model, which counts this useful work, shows its redundancy as a
    lower fraction of roof. The ICL prefix is not included (it is encoded once per actor)."""
    contexts = {(r.item, r.context) for r in requests}
    return sum(len(c) for _, c in contexts) + sum(len(r.continuation) - 1 for r in requests)


def plan_batches(requests: list[Request], batch_size: int) -> list[list[int]]:
    """Request indices grouped into forward batches of up to `batch_size` sequences, whole items
    only (their choices share the context), longest items first. The plan alone fixes every
    batch, so how batches are spread over processes does not change the numbers."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    by_item: dict[int, list[int]] = {}
    for k, r in enumerate(requests):
        by_item.setdefault(r.item, []).append(k)
    size = {i: len(requests[ks[0]].context) + sum(len(requests[k].continuation) - 1 for k in ks) for i, ks in by_item.items()}
    batches: list[list[int]] = []
    for i in sorted(by_item, key=lambda i: (-size[i], i)):
        if not batches or len(batches[-1]) + len(by_item[i]) > batch_size:
            batches.append([])
        batches[-1] += by_item[i]
    return batches


def check_window(items: list[dict], requests: list[Request], offset: int, window: int | None) -> None:
    """Every sequence, after `offset` prefix tokens, must fit `window`; the error names the item.
    The one context-window check of scoring: the planner and `score_items` both call it."""
    for r in requests:
        total = offset + len(r.context) + len(r.continuation) - 1
        if window and total > window:
            raise ScoringError(
                f"item {items[r.item].get('item_id')!r}: {total} tokens (with its context) exceed the model's window of {window}"
            )


def collect(items: list[dict], requests: list[Request], logprobs: list[float]) -> list[dict]:
    """Per-item score dicts from per-request log-probs (same order as `requests`)."""
    out = [
        {"item_id": item.get("item_id"), "choice_logprobs": [0.0] * len(item["choices"]),
         "choice_num_tokens": [0] * len(item["choices"]), "choice_num_chars": [len(c) for c in item["choices"]]}
        for item in items
    ]
    for r, value in zip(requests, logprobs, strict=True):
        out[r.item]["choice_logprobs"][r.choice] = value
        out[r.item]["choice_num_tokens"][r.choice] = len(r.continuation)
    return out


def score_items(
    model, tokenizer, items: list[dict], *, prefix: Prefix | None = None, batch_size: int = 16,
    reuse_prefix_cache: bool = True, window: int | None = None,
) -> list[dict]:
    """Per item, in order: choice_logprobs, choice_num_tokens, choice_num_chars (one entry per
    choice). A prefix, if given, is read before every item. `window`: default the model config's."""
    requests = item_requests(tokenizer, items, after_prefix=prefix is not None)
    window = window or getattr(model.config, "max_position_embeddings", None)
    check_window(items, requests, prefix.num_tokens if prefix is not None else 0, window)
    logprobs = [0.0] * len(requests)
    for batch in plan_batches(requests, batch_size):
        values = score_batch(model, [requests[k] for k in batch], prefix, reuse_prefix_cache, pad_id(tokenizer))
        for k, value in zip(batch, values):
            logprobs[k] = value
    return collect(items, requests, logprobs)


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def predictions(choice_logprobs: list[float], choice_num_chars: list[int]) -> tuple[int, int]:
    """(acc pick, acc_norm pick): argmax of the log-prob, and of the log-prob per character."""
    best = max(range(len(choice_logprobs)), key=lambda j: choice_logprobs[j])
    best_norm = max(range(len(choice_logprobs)), key=lambda j: choice_logprobs[j] / max(choice_num_chars[j], 1))
    return best, best_norm
