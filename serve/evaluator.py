"""Evaluator deployment: likelihood scoring of items under a condition of the run.

Scores come from `pipeline.evaluate.scoring.score_items`, the offline evaluator's one scoring
function, and each condition is built by the offline evaluator's own code
(`pipeline.conditions`: the model or merged LoRA adapter and its tokenizer; `pipeline.evaluate.icl`:
for `icl` the world's context of origin=="train" documents), so a served score equals the offline one.
The ICL context of a world is encoded once per replica and its KV cache reused. Model weights
are multiplexed like the generator's (a model in use is never evicted, `serve.loaded`); `icl`
shares the `base` weights. Forward passes run one at a time (the model and its tokenizer are
only used under `self.lock`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import ray
from ray import serve

from pipeline.config import RunConfig
from pipeline.records import Doc, Item, read_records
from pipeline.runs import Run
from pipeline.stats import mean_stderr
from serve.generator import set_torch_threads
from serve.loaded import LoadedModel, borrow
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


def accuracy(rows: list[dict], key: str) -> tuple[float, float | None]:
    """(accuracy, standard error) of `key` against answer_index, computed as results.json does."""
    return mean_stderr([float(r[key] == r["answer_index"]) for r in rows])


@serve.deployment(name="Evaluator")
class Evaluator:
    def __init__(self, cfg: dict, max_models_per_replica: int, batch_size: int, torch_threads: int):
        self.cfg = RunConfig.model_validate(cfg)
        self.run = Run.of(self.cfg)
        self.batch_size = batch_size
        self.device = set_torch_threads(torch_threads)
        self.loads: Counter[str] = Counter()
        self.contexts = None  # world -> ICL context, built on first use
        self.prefixes: dict = {}  # world -> encoded prefix (KV cache), kept for the replica's life
        self.lock = asyncio.Lock()  # one forward pass at a time: the CPU is the bottleneck

        async def load(model_id: str) -> LoadedModel:
            spec = self._spec(model_id)
            from pipeline.conditions import load_condition_model

            model, tokenizer = await asyncio.to_thread(load_condition_model, spec, self.device)
            self.loads[model_id] += 1
            return LoadedModel(model_id, model, tokenizer)

        self.load_model = load  # serve.multiplexed keeps its LRU cache on this function object
        self.get_model = serve.multiplexed(max_num_models_per_replica=max_models_per_replica)(load)

    def _spec(self, condition: str):
        from pipeline.conditions import ConditionError, condition_spec
        from pipeline.models import ModelError

        try:
            return condition_spec(self.cfg, self.run, condition)
        except (ConditionError, ModelError) as err:
            raise ApiError(404, "condition", str(err)) from None

    async def score_items(self, condition: str, items: list[dict], world: str | None = None) -> list[dict]:
        """Items as {prompt, choices}; each comes back with its choices' log-probs and predictions."""
        named = [{"item_id": f"items[{i}]", **item} for i, item in enumerate(items)]
        if condition == "icl":
            world = world or self._only_world()
            named = [{**item, "world": world} for item in named]
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

        async with borrow(self.get_model, serve.get_multiplexed_model_id()) as loaded, self.lock:
            prefix = await asyncio.to_thread(self._icl_prefix, loaded, items[0]["world"]) if condition == "icl" else None
            try:
                return await asyncio.to_thread(score_items, loaded.model, loaded.tokenizer, items,
                                               prefix=prefix, batch_size=self.batch_size)
            except ScoringError as err:
                raise ApiError(400, "items", str(err)) from None

    def _only_world(self) -> str:
        worlds = sorted({it["world"] for it in read_records(self.run.path("data", "items.parquet"), Item)})
        if len(worlds) != 1:
            raise ApiError(400, "world", f"the icl condition needs the world whose documents form the context; "
                                         f"this run has {worlds}")
        return worlds[0]

    def _icl_prefix(self, loaded: LoadedModel, world: str):
        """The world's ICL context, built as the offline evaluator builds it, encoded once."""
        from pipeline.conditions import ConditionError, context_window
        from pipeline.evaluate.icl import icl_contexts
        from pipeline.evaluate.scoring import encode_prefix

        if self.contexts is None:
            docs = read_records(self.run.path("data", "docs.parquet"), Doc)
            items = read_records(self.run.path("data", "items.parquet"), Item)
            try:
                self.contexts = icl_contexts(self.cfg, docs, items, loaded.tokenizer, context_window(self._spec("icl")))
            except ConditionError as err:
                raise ApiError(400, "condition", str(err)) from None
        if world not in self.contexts:
            raise ApiError(404, "world", f"{world!r} has no ICL context in this run; worlds: {sorted(self.contexts)}")
        if world not in self.prefixes:
            self.prefixes[world] = encode_prefix(loaded.model, loaded.tokenizer, self.contexts[world].text)
        return self.prefixes[world]

    def stats(self) -> dict:
        wrapper = getattr(self.load_model, "__serve_multiplex_wrapper", None)
        return {"loaded": list(wrapper.models) if wrapper is not None else [], "loads": dict(self.loads),
                "icl_prefix_tokens": {w: p.num_tokens for w, p in self.prefixes.items()},
                "resources": ray.get_runtime_context().get_assigned_resources(), "time": time.time()}

    def check_health(self) -> None:
        if not self.run.path("data", "items.parquet").is_file():
            raise RuntimeError(f"{self.run.dir}: data/items.parquet is gone")
