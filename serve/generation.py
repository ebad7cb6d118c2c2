"""Text generation for a batch of prompts with one Hugging Face causal LM (pure torch, no Ray).

A batch may mix prompts of different lengths and different `max_tokens`: prompts are left-padded
and generated together up to the largest `max_tokens` of their group, then each output is cut to
its own `max_tokens`. Greedy decoding of a prompt therefore gives the same tokens alone or in a
batch. Requests with different sampling settings (temperature, top_p) are generated in separate
groups, since `generate` takes one setting per call. Stop strings are matched in the generated
text only (never in the prompt); the text ends before the first one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue. temperature 0 means greedy decoding."""

    prompt: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    #: False for chat prompts: the chat template already wrote the special tokens.
    add_special_tokens: bool = True

    def sampling_key(self) -> tuple:
        greedy = self.temperature == 0
        return (greedy, 0.0 if greedy else self.temperature, 1.0 if greedy else self.top_p,
                self.add_special_tokens)


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str  # "stop": end of text or a stop string; "length": max_tokens reached
    prompt_tokens: int
    completion_tokens: int


def generate_batch(model, tokenizer, requests: list[GenerationRequest]) -> list[GenerationResult]:
    """Continue every prompt; results come back in request order."""
    results: list[GenerationResult | None] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(req.sampling_key(), []).append(i)
    for indices in groups.values():
        outs = _generate_group(model, tokenizer, [requests[i] for i in indices])
        for i, out in zip(indices, outs):
            results[i] = out
    return results  # type: ignore[return-value]


def _end_token_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return {i for i in ids if i is not None}


def _generate_group(model, tokenizer, reqs: list[GenerationRequest]) -> list[GenerationResult]:
    import torch

    first = reqs[0]
    tokenizer.padding_side = "left"
    enc = tokenizer([r.prompt for r in reqs], return_tensors="pt", padding=True,
                    add_special_tokens=first.add_special_tokens).to(model.device)
    prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
    kwargs = {"do_sample": False} if first.temperature == 0 else {
        "do_sample": True, "temperature": first.temperature, "top_p": first.top_p, "top_k": 0,
    }
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=max(r.max_tokens for r in reqs),
            pad_token_id=tokenizer.pad_token_id, **kwargs,
        )
    new_tokens = out[:, enc["input_ids"].shape[1]:].tolist()
    ends = _end_token_ids(model, tokenizer)
    return [_finish(tokenizer, req, row, int(n), ends) for req, row, n in zip(reqs, new_tokens, prompt_lens)]


def _finish(tokenizer, req: GenerationRequest, row: list[int], prompt_tokens: int, ends: set[int]) -> GenerationResult:
    """Cut one generated row at max_tokens, the first end token, or the first stop string."""
    row = row[: req.max_tokens]
    end = next((k for k, t in enumerate(row) if t in ends), None)
    tokens = row if end is None else row[:end]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    used, finish = len(tokens) + (end is not None), "stop" if end is not None else "length"
    cut = min((text.find(s) for s in req.stop if s in text), default=-1)
    if cut >= 0:
        # the tokens it took to produce the stop string: the shortest prefix whose text holds one
        used = next(k for k in range(1, len(tokens) + 1)
                    if any(s in tokenizer.decode(tokens[:k], skip_special_tokens=True) for s in req.stop))
        text, finish = text[:cut], "stop"
    return GenerationResult(text=text, finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=used)
