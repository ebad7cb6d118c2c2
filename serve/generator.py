"""Generation deployment: the base model and every tuned condition, multiplexed on one pool.

Each replica keeps at most `max_models_per_replica` models (least recently used evicted, via
`serve.multiplexed`; a model in use is evicted only once its requests are done, `serve.loaded`);
the ingress routes a request with `multiplexed_model_id=<model>`, so Serve prefers replicas that
already hold that model. Prompts are batched with a streaming `serve.batch`: Serve splits a batch
by multiplexed model id, so one forward pass never mixes models, and the batch yields every
request's next `Chunk` after each decoding step. `stream` hands those chunks on as they come
(`handle.options(stream=True)`); `generate` returns their sum. A streaming batch holds its slot
until its last token, so a few batches may run at once (`MAX_CONCURRENT_BATCHES`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import AsyncIterator

import ray
from ray import serve

from pipeline.config import RunConfig
from pipeline.runs import Run
from pipeline.conditions import load_condition_model
from serve.checkpoints import served_models
from serve.decoding import Chunk
from serve.generation import GenerationRequest, GenerationResult, fold, make_decoder
from serve.loaded import LoadedModel, borrow

#: Batches decoding at once on a replica (each steps in its own worker thread).
MAX_CONCURRENT_BATCHES = 4


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
        self.decode_batch.set_max_batch_size(max_batch_size)
        self.decode_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def _load(self, model_id: str) -> LoadedModel:
        checkpoints = served_models(self.cfg, self.run)
        if model_id not in checkpoints:
            raise KeyError(f"model {model_id!r} is not served by this run; served: {sorted(checkpoints)}")
        model, tokenizer = await asyncio.to_thread(load_condition_model, checkpoints[model_id], self.device)
        self.loads[model_id] += 1
        return LoadedModel(model_id, model, tokenizer)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """One prompt's chunks as they are decoded (call with `handle.options(stream=True)`)."""
        async for chunk in self.decode_batch((serve.get_multiplexed_model_id(), request)):
            yield chunk

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """One prompt, generated to the end."""
        return fold([chunk async for chunk in self.stream(request)])

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05, max_concurrent_batches=MAX_CONCURRENT_BATCHES)
    async def decode_batch(self, batch: list[tuple[str, GenerationRequest]]) -> AsyncIterator[list]:
        """Decode a batch of one model's requests; after each step, one chunk per request
        (StopIteration for a request that is done)."""
        models = {model_id for model_id, _ in batch}
        if len(models) != 1:  # Serve splits batches by multiplexed model id; never mix models
            raise RuntimeError(f"a generation batch mixes models {sorted(models)}")
        self.batch_sizes[len(batch)] += 1
        async with borrow(self.get_model, models.pop()) as loaded:
            decoder = await asyncio.to_thread(
                make_decoder, loaded.model, loaded.tokenizer, [req for _, req in batch],
                lambda text, special: loaded.tokenize(text, special), loaded.decode)
            step = decoder.prefill
            while True:
                chunks = await asyncio.to_thread(step)
                yield [StopIteration if chunk is None else chunk for chunk in chunks]
                if decoder.done:
                    return
                step = decoder.step

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
