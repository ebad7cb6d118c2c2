"""What each condition scores with: its model, and for ICL the context placed before every item.

- `base`: the run's model, the item's prompt alone.
- `icl`: the run's model; before each item, an instruction and the origin=="train" documents of
  the item's world (the data FT trains on), one context per world, wrapped as a user turn of the
  chat template when configured. A context that does not fit the window is an error stating both
  lengths, unless `evaluate.icl.overflow` says to subsample or truncate.
- every FT condition: the folder `<run>/models/<condition>/` written by `train`.
- `evaluate.checkpoints`: extra named HF folders. A LoRA adapter folder (adapter_config.json) is
  loaded on the run's model and merged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pipeline import models
from pipeline.config import FT_STRATEGIES, RunConfig
from pipeline.evaluate.config import IclConfig
from pipeline.evaluate.scoring import item_requests, start_ids
from pipeline.runs import Run
from pipeline.section import ModelConfig

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ConditionError(ValueError):
    """A condition that cannot be scored: a missing or bad model folder, an ICL context too long."""


@dataclass(frozen=True)
class ConditionSpec:
    """Everything a scorer actor needs to build a condition (picklable, no tensors)."""

    name: str
    model: ModelConfig  # the run's model, or the condition's folder
    base: ModelConfig  # the run's model: the base of a LoRA adapter
    adapter: bool = False
    contexts: tuple[tuple[str, str], ...] = ()  # (world, ICL prefix text); empty: no prefix


@dataclass(frozen=True)
class IclContext:
    world: str
    text: str
    num_docs: int
    total_docs: int
    num_tokens: int
    chat_template: bool


def condition_names(cfg: RunConfig) -> list[str]:
    """The configured conditions, then the extra checkpoints, in that order."""
    return list(cfg.conditions) + list(cfg.evaluate.checkpoints)


def _check_model_folder(path: Path, what: str) -> bool:
    """True for a LoRA adapter folder, False for a full model; an error for anything else."""
    if not path.is_dir():
        raise ConditionError(f"{what}: {path}: no such folder")
    if (path / "adapter_config.json").is_file():
        return True
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return False
    raise ConditionError(f"{what}: {path} is not a model folder (no config.json with safetensors weights, no adapter_config.json)")


def condition_spec(cfg: RunConfig, run: Run, name: str, contexts: dict[str, IclContext] | None = None) -> ConditionSpec:
    """Where condition `name` gets its model; checks the folder before any scoring starts."""
    if name in ("base", "icl"):
        ctx = tuple((w, c.text) for w, c in sorted((contexts or {}).items())) if name == "icl" else ()
        return ConditionSpec(name, cfg.model, cfg.model, contexts=ctx)
    if name in FT_STRATEGIES:
        path = run.path("models", name)
        if not path.is_dir():
            raise ConditionError(f"condition {name!r}: {path}: no model; run `python -m pipeline train CONFIG` first")
        adapter = _check_model_folder(path, f"condition {name!r}")
    elif name in cfg.evaluate.checkpoints:
        path = Path(cfg.evaluate.checkpoints[name]).expanduser()
        adapter = _check_model_folder(path, f"evaluate.checkpoints.{name}")
    else:
        raise ConditionError(f"condition {name!r}: not a configured condition or checkpoint")
    folder = cfg.model.model_copy(update={"ref": str(path.resolve())})
    return ConditionSpec(name, folder, cfg.model, adapter=adapter)


def load_condition_tokenizer(spec: ConditionSpec):
    """The folder's own tokenizer if it has one, else the run model's."""
    own = spec.model != spec.base and any((Path(spec.model.ref) / f).is_file() for f in _TOKENIZER_FILES)
    return models.load_tokenizer(spec.model if own else spec.base)


def load_condition_model(spec: ConditionSpec, device: str = "cpu"):
    """(model, tokenizer) of a condition, in eval mode; an adapter is merged into its base."""
    folder = Path(spec.model.ref)
    tokenizer = load_condition_tokenizer(spec)
    if not spec.adapter:
        return models.load_model(spec.model, device=device), tokenizer
    from peft import PeftModel

    base = models.load_model(spec.base, device=device)
    try:
        merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as err:
        raise ConditionError(f"{folder}: cannot load this LoRA adapter onto {spec.base.ref}: {err}") from None
    return merged.eval(), tokenizer


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
