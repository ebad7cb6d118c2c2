"""Generation engines behind one interface, and the transformers (HF) engine.

Every engine (HF here, vLLM in `vllm_engine.py`) turns rendered prompts into generations, in batches:
- `generate(prompts, n, max_new_tokens, temperature, seed)`;
- `generate_with_prefix(prefix, suffixes, ...)`: every prompt is prefix + suffix. The HF engine
  encodes the prefix once (a KV cache kept per engine, keyed by the prefix text) and reuses it
  for every batch of suffixes, never mutated: copied into the batch's cache once (row 0) for the
  shared-prefix attention below, or into every row of it without.
  Greedy outputs are the same token ids as re-encoding the prefix for each prompt
  (`use_cache=False`, kept as the baseline the benchmark compares against).
Suffixes are left-padded behind the prefix, with the padding masked out; positions come from
the attention mask, so each suffix continues right after the prefix.
Every batch decodes into a preallocated (static) KV cache sized for its prompts plus the new
tokens, where a growing cache would copy all of itself, shared prefix included, at every new
token. With a shared prefix, attention reads the prefix's keys and values once per step for the
whole batch rather than once per row, and the batch's cache holds it once (`shared_prefix.py`;
on for models that use SDPA, off with `share_prefix_attention=False`). `bench.augment_prefix_cache`
compares each against the alternative.

The vLLM engine (GPU, through ray.data.llm) is in `vllm_engine.py`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from pipeline.augment import shared_prefix
from pipeline.section import ModelConfig

#: End-of-turn tokens of common chat templates; generation stops at any that the vocabulary has.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int
    prompt_tokens: int
    token_ids: tuple[int, ...] = ()


class HFEngine:
    """Batched generation with transformers on CPU or CUDA, with a reusable prefix KV cache."""

    def __init__(self, model: ModelConfig | str, device: str = "cpu", batch_size: int = 8, threads: int | None = None,
                 max_cached_prefixes: int = 2, share_prefix_attention: bool = True, static_cache: bool = True):
        import torch

        from pipeline.models import load_model, load_tokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = device
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(model)
        self.model = load_model(model, device=device)
        # The shared-prefix attention stands in for SDPA only (same masks); other implementations stay.
        self.share_prefix_attention = share_prefix_attention and self.model.config._attn_implementation == "sdpa"
        if self.share_prefix_attention:
            self.model.set_attn_implementation(shared_prefix.register())
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        vocab = self.tokenizer.get_vocab()
        stops = {self.tokenizer.eos_token_id, *(vocab[t] for t in END_OF_TURN if t in vocab)}
        self.stop_ids = sorted(i for i in stops if i is not None)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        # static_cache=False: decode into a cache that grows at every token (transformers' default),
        # kept as an option so that benchmarks can compare with it
        self.static_cache = static_cache
        self._prefixes: OrderedDict[str, tuple[list[int], object]] = OrderedDict()
        self.max_cached_prefixes = max_cached_prefixes
        self.prefix_encodings = 0  # how many times a prefix was run through the model

    # ------------------------------------------------------------------ tokens

    def encode(self, text: str, first: bool = True) -> list[int]:
        """Token ids as the engine feeds them (special tokens only for a non-chat first segment)."""
        return self.tokenizer(text, add_special_tokens=first and not self.chat)["input_ids"]

    def _padded(self, rows: list[list[int]]):
        torch = self.torch
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r):] = 1
        return ids, mask

    def _decode(self, out, start: int, prompt_tokens: list[int]) -> list[Generation]:
        gens = []
        for row, n_prompt in zip(out[:, start:].tolist(), prompt_tokens):
            cut = next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))
            text = self.tokenizer.decode(row[:cut], skip_special_tokens=True).strip()
            gens.append(Generation(text=text, new_tokens=cut, prompt_tokens=n_prompt, token_ids=tuple(row[:cut])))
        return gens

    def batch_cache(self, rows: int, length: int, prefix=None):
        """A static KV cache for `rows` rows of up to `length` tokens, starting with `prefix` (a cache
        of one row) when given: stored once, in row 0, for the shared-prefix attention; otherwise in
        every row. With `static_cache` off: None, or a copy of the prefix that grows as it decodes."""
        import copy

        from transformers import StaticCache

        if not self.static_cache:
            if prefix is None:
                return None  # generate() makes its own growing cache
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(rows)
            return cache

        if prefix is not None and self.share_prefix_attention:
            cache = shared_prefix.batch_cache(self.model.config, rows, length, prefix)
            if cache is not None:
                return cache
        cache = StaticCache(config=self.model.config, max_cache_len=length)
        if prefix is not None:
            for i, layer in enumerate(prefix.layers):
                cache.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), i)
        return cache

    def _run(self, ids, mask, max_new_tokens: int, temperature: float, seed: int, prefix=None):
        torch = self.torch
        sampling = temperature > 0
        if sampling:
            torch.manual_seed(seed)
        kwargs = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if sampling else dict(do_sample=False)
        cache = self.batch_cache(ids.shape[0], ids.shape[1] + max_new_tokens, prefix)
        shared = prefix.get_seq_length() if prefix is not None and self.share_prefix_attention else 0
        with torch.no_grad(), shared_prefix.shared_prefix(shared):
            return self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), past_key_values=cache,
                max_new_tokens=max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                disable_compile=True, **kwargs,
            ).cpu()

    @staticmethod
    def _grouped(flat: list[Generation], n: int) -> list[list[Generation]]:
        return [flat[i:i + n] for i in range(0, len(flat), n)]

    # ------------------------------------------------------------------ plain prompts

    def generate(self, prompts: list[str], n: int = 1, max_new_tokens: int = 48, temperature: float = 0.0,
                 seed: int = 0) -> list[list[Generation]]:
        rows = [self.encode(p) for p in prompts for _ in range(n)]
        flat: list[Generation] = []
        for b, start in enumerate(range(0, len(rows), self.batch_size)):
            chunk = rows[start:start + self.batch_size]
            ids, mask = self._padded(chunk)
            out = self._run(ids, mask, max_new_tokens, temperature, seed + b)
            flat.extend(self._decode(out, ids.shape[1], [len(r) for r in chunk]))
        return self._grouped(flat, n)

    # ------------------------------------------------------------------ shared prefix

    def clear_prefix_cache(self) -> None:
        """Forget every encoded prefix (the next use encodes it again)."""
        self._prefixes.clear()

    def prefix_cache(self, prefix: str):
        """(prefix ids, KV cache of the prefix): encoded on first use, then reused (LRU)."""
        if prefix in self._prefixes:
            self._prefixes.move_to_end(prefix)
            return self._prefixes[prefix]
        from transformers import DynamicCache

        ids = self.encode(prefix)
        cache = DynamicCache(config=self.model.config)
        with self.torch.no_grad():
            self.model(input_ids=self.torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True)
        self.prefix_encodings += 1
        self._prefixes[prefix] = (ids, cache)
        while len(self._prefixes) > self.max_cached_prefixes:
            self._prefixes.popitem(last=False)
        return ids, cache

    def generate_with_prefix(self, prefix: str, suffixes: list[str], n: int = 1, max_new_tokens: int = 96,
                             temperature: float = 0.0, seed: int = 0, use_cache: bool = True) -> list[list[Generation]]:
        """Every suffix after the same prefix; use_cache=False re-encodes the prefix for every prompt."""
        torch = self.torch
        if use_cache:
            prefix_ids, cache = self.prefix_cache(prefix)
        else:
            prefix_ids, cache = self.encode(prefix), None
        rows = [self.encode(s, first=False) for s in suffixes for _ in range(n)]
        flat: list[Generation] = []
        for b, start in enumerate(range(0, len(rows), self.batch_size)):
            chunk = rows[start:start + self.batch_size]
            suffix_ids, suffix_mask = self._padded(chunk)
            k = len(chunk)
            ids = torch.cat([torch.tensor([prefix_ids] * k, dtype=torch.long), suffix_ids], dim=1)
            mask = torch.cat([torch.ones((k, len(prefix_ids)), dtype=torch.long), suffix_mask], dim=1)
            out = self._run(ids, mask, max_new_tokens, temperature, seed + b, prefix=cache)
            flat.extend(self._decode(out, ids.shape[1], [len(prefix_ids) + len(r) for r in chunk]))
        return self._grouped(flat, n)
