"""The evaluator's two routes, shared by both engines' ingresses (`serve.http_api`, `serve.vllm_ingress`).

`/v1/evaluate` and `/v1/evaluate/split` are checked here (item and choice counts, every prompt
and choice within the context window, the condition one of the run's) and answered by the
`Evaluator` deployment (`serve.evaluator`), which scores with the offline evaluator's function.
A refusal from the evaluator replica (an unknown world or split) reaches the client as the same
4xx, not as a server error.
"""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.runs import Run
from serve.checkpoints import served_models, weights_for_condition
from serve.schemas import ApiError, EvaluateRequest, EvaluateSplitRequest


async def evaluate(body: EvaluateRequest, cfg: RunConfig, run: Run, evaluator, tokenizer, window: int) -> dict:
    """Score `body.items` under `body.condition`; `tokenizer`: the run model's."""
    limits = cfg.serve
    if len(body.items) > limits.max_items:
        raise ApiError(400, "items", f"at most {limits.max_items} items per request, got {len(body.items)}")
    for i, item in enumerate(body.items):
        if len(item.choices) > limits.max_choices:
            raise ApiError(400, f"items[{i}].choices", f"at most {limits.max_choices} choices, got {len(item.choices)}")
        longest = max(len(tokenizer(item.prompt + " " + c)["input_ids"]) for c in item.choices)
        if longest > window:
            raise ApiError(400, f"items[{i}]", f"{longest} prompt tokens + max_tokens 0 exceed the context window "
                                               f"of {window} tokens")
    handle = evaluator_for(evaluator, body.condition, cfg, run)
    items = [item.model_dump() for item in body.items]
    results = await _answer(handle.score_items.remote(body.condition, items, body.world))
    return {"condition": body.condition, "results": results}


async def evaluate_split(body: EvaluateSplitRequest, cfg: RunConfig, run: Run, evaluator) -> dict:
    """Score the run's stored items of one world and split (what results.json reports)."""
    handle = evaluator_for(evaluator, body.condition, cfg, run)
    return await _answer(handle.score_split.remote(body.condition, body.world, body.split))


def evaluator_for(evaluator, condition: str, cfg: RunConfig, run: Run):
    """The evaluator handle multiplexed to the weights that score `condition`; 404 if unknown."""
    extra = list(getattr(cfg.evaluate, "checkpoints", None) or {})  # the evaluator's named extra models
    try:
        weights = condition if condition in extra else weights_for_condition(condition, cfg, run)
    except KeyError:
        known = ["base", "icl", *[m for m in served_models(cfg, run) if m != "base"], *extra]
        raise ApiError(404, "condition", f"{condition!r} is not available in this run; available: {known}") from None
    return evaluator.options(multiplexed_model_id=weights)


async def _answer(response):
    """The replica's answer; its ApiError (wrapped by Ray on the way) raised as itself."""
    try:
        return await response
    except Exception as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, ApiError):
            raise cause from None
        raise
