"""Generation deployment: the base model and every tuned condition, multiplexed on one pool.

Each replica keeps at most `max_models_per_replica` models (least recently used evicted, via
`serve.multiplexed`); the ingress routes a request with `multiplexed_model_id=<model>`, so Serve
prefers replicas that already hold that model. Single prompts are batched with `serve.batch`;
Serve splits a batch by multiplexed model id, and `generate_batch` is also handed each model's
requests separately, so one forward pass never mixes models.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import ray
from ray import serve

from pipeline.config import RunConfig
from pipeline.runs import Run
from pipeline.conditions import load_condition_model
from serve.checkpoints import served_models
from serve.generation import GenerationRequest, GenerationResult, generate_batch


class LoadedModel:
    """A model and its tokenizer as held by a replica."""

    def __init__(self, name: str, model, tokenizer):
        self.name, self.model, self.tokenizer = name, model, tokenizer

    def __del__(self):
        """Called by serve.multiplexed on eviction: drop the weights now, not at some later GC."""
        model, self.model = getattr(self, "model", None), None
        if model is not None and model.device.type == "cuda":
            import torch

            del model
            torch.cuda.empty_cache()


def set_torch_threads(n: int) -> str:
    """Set torch's CPU threads; returns the device models go to (cuda when the replica has a GPU)."""
    import torch

    torch.set_num_threads(n)
    return "cuda" if torch.cuda.is_available() else "cpu"


@serve.deployment(name="Generator")
class Generator:
    def __init__(self, cfg: dict, max_models_per_replica: int, max_batch_size: int, batch_wait_timeout_s: float,
                 torch_threads: int):
        self.cfg = RunConfig.model_validate(cfg)
        self.run = Run.of(self.cfg)
        self.device = set_torch_threads(torch_threads)
        self.loads: Counter[str] = Counter()
        self.batch_sizes: Counter[int] = Counter()

        async def load(model_id: str) -> LoadedModel:
            return await self._load(model_id)

        # Wired at init so the cache size comes from the config, not the class definition.
        self.load_model = load  # serve.multiplexed keeps its LRU cache on this function object
        self.get_model = serve.multiplexed(max_num_models_per_replica=max_models_per_replica)(load)
        self.generate_one.set_max_batch_size(max_batch_size)
        self.generate_one.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def _load(self, model_id: str) -> LoadedModel:
        checkpoints = served_models(self.cfg, self.run)
        if model_id not in checkpoints:
            raise KeyError(f"model {model_id!r} is not served by this run; served: {sorted(checkpoints)}")
        model, tokenizer = await asyncio.to_thread(load_condition_model, checkpoints[model_id], self.device)
        self.loads[model_id] += 1
        return LoadedModel(model_id, model, tokenizer)

    async def generate(self, request: dict) -> dict:
        """One prompt: `request` holds GenerationRequest's fields; returns GenerationResult's."""
        model_id = serve.get_multiplexed_model_id()
        result = await self.generate_one((model_id, GenerationRequest(**request)))
        return result.__dict__

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def generate_one(self, batch: list[tuple[str, GenerationRequest]]) -> list[GenerationResult]:
        self.batch_sizes[len(batch)] += 1
        results: list[GenerationResult | None] = [None] * len(batch)
        by_model: dict[str, list[int]] = {}
        for i, (model_id, _) in enumerate(batch):
            by_model.setdefault(model_id, []).append(i)
        for model_id, indices in by_model.items():
            loaded = await self.get_model(model_id)
            outs = await asyncio.to_thread(
                generate_batch, loaded.model, loaded.tokenizer, [batch[i][1] for i in indices]
            )
            for i, out in zip(indices, outs):
                results[i] = out
        return results  # type: ignore[return-value]

    def stats(self) -> dict:
        """What this replica loaded, evicted and holds now (most recently used last)."""
        wrapper = getattr(self.load_model, "__serve_multiplex_wrapper", None)
        loaded = list(wrapper.models) if wrapper is not None else []
        # A model leaves a replica only by LRU eviction, so evictions = loads - still loaded.
        evictions = {m: n - (m in loaded) for m, n in self.loads.items() if n - (m in loaded)}
        return {
            "loaded": loaded,
            "loads": dict(self.loads),
            "evictions": evictions,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "resources": ray.get_runtime_context().get_assigned_resources(),
            "time": time.time(),
        }

    def check_health(self) -> None:
        """Serve restarts a replica whose check fails: here, when the run folder it serves is gone."""
        if not self.run.dir.is_dir():
            raise RuntimeError(f"{self.run.dir}: the run folder is gone")
