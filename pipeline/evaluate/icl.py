"""The ICL condition's context: the origin=="train" documents of each world, placed before every item.

One context per world, after an instruction, wrapped as a user turn of the chat template when
configured. A context that does not fit the window is an error stating both lengths, unless
`evaluate.icl.overflow` says to subsample or truncate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.conditions import ConditionError
from pipeline.config import RunConfig
from pipeline.evaluate.config import IclConfig
from pipeline.evaluate.scoring import item_requests, start_ids


@dataclass(frozen=True)
class IclContext:
    world: str
    text: str
    num_docs: int
    total_docs: int
    num_tokens: int
    chat_template: bool


# ---------------------------------------------------------------- the ICL context


def use_chat_template(icl: IclConfig, tokenizer) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if icl.chat_template == "on" and not has:
        raise ConditionError("evaluate.icl.chat_template is 'on' but the model's tokenizer has no chat template")
    return has if icl.chat_template == "auto" else icl.chat_template == "on"


def render_context(instruction: str, texts: list[str], tokenizer, chat: bool) -> str:
    """Instruction and documents as the text that precedes every item's prompt."""
    body = instruction.strip() + "\n\n" + "\n".join(t.strip() for t in texts)
    if chat:
        messages = [{"role": "user", "content": body}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return body + "\n\n"


def _fit(order: list[int], render, budget: int) -> list[int]:
    """The longest head of `order` (kept in document order) whose rendering fits `budget` tokens."""
    lo, hi = 0, len(order)  # invariant: head of length lo fits (0 trivially), hi is the upper bound
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if render(sorted(order[:mid]))[1] <= budget:
            lo = mid
        else:
            hi = mid - 1
    return sorted(order[:lo])


def icl_context(world: str, texts: list[str], world_items: list[dict], tokenizer, icl: IclConfig,
                window: int, seed: int) -> IclContext:
    """One world's ICL context: subsampled, checked against the window, overflow handled."""
    if not texts:
        raise ConditionError(f"world {world!r}: ICL needs its training documents, but data/docs.parquet has none (origin 'train')")
    chat = use_chat_template(icl, tokenizer)
    rng = random.Random(f"{seed}:icl:{world}")
    keep = sorted(rng.sample(range(len(texts)), max(1, round(icl.doc_fraction * len(texts)))))
    requests = item_requests(tokenizer, world_items, after_prefix=True)
    longest = max(len(r.context) + len(r.continuation) - 1 for r in requests)
    budget = window - longest

    def render(indices: list[int]) -> tuple[str, int]:
        text = render_context(icl.instruction, [texts[i] for i in indices], tokenizer, chat)
        return text, len(start_ids(tokenizer, text))

    text, n_tokens = render(keep)
    if n_tokens > budget:
        if icl.overflow == "error":
            raise ConditionError(
                f"world {world!r}: the ICL context is {n_tokens} tokens ({len(keep)} documents) and its longest "
                f"item needs {longest} more, but the model's window is {window} tokens; set "
                "evaluate.icl.overflow=subsample or truncate, or lower evaluate.icl.doc_fraction"
            )
        order = keep if icl.overflow == "truncate" else random.Random(f"{seed}:overflow:{world}").sample(keep, len(keep))
        keep = _fit(order, render, budget)
        if not keep:
            raise ConditionError(f"world {world!r}: not even one document fits the model's window of {window} tokens")
        text, n_tokens = render(keep)
    return IclContext(world, text, len(keep), len(texts), n_tokens, chat)


def icl_contexts(cfg: RunConfig, docs: list[dict], items: list[dict], tokenizer, window: int) -> dict[str, IclContext]:
    """One context per world that has items, from that world's origin=="train" docs, in file order."""
    out = {}
    for world in sorted({it["world"] for it in items}):
        texts = [d["text"] for d in docs if d["world"] == world and d["origin"] == "train"]
        world_items = [it for it in items if it["world"] == world]
        out[world] = icl_context(world, texts, world_items, tokenizer, cfg.evaluate.icl, window, cfg.seed)
    return out
