"""Evaluator deployment: likelihood scoring of items under a condition of the run.

Scores come from `pipeline.evaluate.scoring.score_items`, the offline evaluator's one scoring
function, so a served score equals the offline one. Conditions: `base` (the base model), `icl`
(the base model reading the run's training corpus first; the prefix is encoded once per replica
and its KV cache reused), or a tuned condition under models/. Model weights are multiplexed like
the generator's (icl shares the base weights).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

from ray import serve

from pipeline.config import RunConfig
from pipeline.records import Item, read_records
from pipeline.runs import Run
from serve.checkpoints import load_checkpoint, served_models
from serve.generator import LoadedModel, set_torch_threads
from serve.schemas import ApiError


def summarize(scores: list[dict], answers: list[int] | None = None) -> list[dict]:
    """Add each item's prediction (argmax log-prob) and length-normalized prediction."""
    from pipeline.evaluate.scoring import predictions

    out = []
    for k, score in enumerate(scores):
        best, best_norm = predictions(score["choice_logprobs"], score["choice_num_chars"])
        row = {**score, "prediction": best, "prediction_norm": best_norm}
        if answers is not None:
            row["answer_index"] = answers[k]
        out.append(row)
    return out


def accuracy(rows: list[dict], key: str) -> tuple[float, float]:
    """(accuracy, standard error) of `key` against answer_index."""
    n = len(rows)
    acc = sum(r[key] == r["answer_index"] for r in rows) / n
    return acc, math.sqrt(acc * (1 - acc) / n)


@serve.deployment(name="Evaluator")
class Evaluator:
    def __init__(self, cfg: dict, max_models_per_replica: int, batch_size: int, torch_threads: int):
        from pipeline.models import load_tokenizer

        self.cfg = RunConfig.model_validate(cfg)
        self.run = Run.of(self.cfg)
        self.batch_size = batch_size
        self.device = set_torch_threads(torch_threads)
        self.tokenizer = load_tokenizer(self.cfg.model)
        self.loads: Counter[str] = Counter()
        self.icl_prefix = None  # encoded on first use, kept for the replica's life
        self.lock = asyncio.Lock()  # one forward pass at a time: the CPU is the bottleneck

        async def load(model_id: str) -> LoadedModel:
            checkpoint = served_models(self.run)[model_id]
            model = await asyncio.to_thread(load_checkpoint, self.cfg, checkpoint, self.device)
            self.loads[model_id] += 1
            return LoadedModel(model_id, model, self.tokenizer)

        self.load_model = load  # serve.multiplexed keeps its LRU cache on this function object
        self.get_model = serve.multiplexed(max_num_models_per_replica=max_models_per_replica)(load)

    async def score_items(self, condition: str, items: list[dict]) -> list[dict]:
        """Items as {prompt, choices}; each comes back with its choices' log-probs and predictions."""
        named = [{"item_id": f"items[{i}]", **item} for i, item in enumerate(items)]
        scores = await self._score(condition, named)
        return [{k: v for k, v in row.items() if k != "item_id"} for row in summarize(scores)]

    async def score_split(self, condition: str, world: str, split: str) -> dict:
        """Score the run's stored items of one world and split; accuracy and acc_norm with SEs."""
        items = read_records(self.run.path("data", "items.parquet"), Item)
        worlds = sorted({it["world"] for it in items})
        if world not in worlds:
            raise ApiError(404, "world", f"{world!r} is not a world of this run; worlds: {worlds}")
        splits = sorted({it["split"] for it in items if it["world"] == world})
        if split not in splits:
            raise ApiError(404, "split", f"{split!r} is not a split of world {world!r}; splits: {splits}")
        chosen = [it for it in items if it["world"] == world and it["split"] == split]
        rows = summarize(await self._score(condition, chosen), [it["answer_index"] for it in chosen])
        acc, se = accuracy(rows, "prediction")
        acc_norm, se_norm = accuracy(rows, "prediction_norm")
        return {"condition": condition, "world": world, "split": split, "n": len(rows),
                "accuracy": acc, "accuracy_se": se, "acc_norm": acc_norm, "acc_norm_se": se_norm,
                "chance": sum(1 / len(it["choices"]) for it in chosen) / len(chosen), "items": rows}

    async def _score(self, condition: str, items: list[dict]) -> list[dict]:
        from pipeline.evaluate.scoring import ScoringError, score_items

        loaded = await self.get_model(serve.get_multiplexed_model_id())
        async with self.lock:
            prefix = await self._icl_prefix(loaded) if condition == "icl" else None
            try:
                return await asyncio.to_thread(score_items, loaded.model, loaded.tokenizer, items,
                                               prefix=prefix, batch_size=self.batch_size)
            except ScoringError as err:
                raise ApiError(400, "items", str(err)) from None

    async def _icl_prefix(self, loaded: LoadedModel):
        raise ApiError(501, "condition", "icl is not available yet")

    def stats(self) -> dict:
        wrapper = getattr(self.load_model, "__serve_multiplex_wrapper", None)
        return {"loaded": list(wrapper.models) if wrapper is not None else [], "loads": dict(self.loads),
                "icl_prefix_tokens": self.icl_prefix.num_tokens if self.icl_prefix is not None else None,
                "time": time.time()}

    def check_health(self) -> None:
        if not self.run.path("data", "items.parquet").is_file():
            raise RuntimeError(f"{self.run.dir}: data/items.parquet is gone")
