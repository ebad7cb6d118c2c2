"""HTTP ingress of the vllm engine: Ray Serve LLM's OpenAI router plus this server's own routes.

`RunIngress` is Ray Serve LLM's `OpenAiIngress` (it routes `/v1/completions`,
`/v1/chat/completions`, `/tokenize` and `/detokenize` to the vLLM deployments, a LoRA model id
`base:<condition>` multiplexed onto the base's replicas) with:
- the run's model names: a LoRA condition's own name (`ft+oracle`) is taken for its model id
  (`base:ft+oracle`), an unknown model is a 404 naming the served ones, and `/v1/models` lists
  exactly the run's models;
- the config's request limits (`serve.vllm_plan.request_problem`, a 400 naming the field) and
  `serve.default_max_tokens` for a request that sets no max_tokens;
- the evaluator's routes (`serve.evaluate_routes`) and `/healthz`.
Keys and the body-size limit are the application's middleware (`serve.vllm_app`). Needs vLLM
(Ray Serve LLM imports it).
"""

from ray.serve.llm.ingress import OpenAiIngress

from pipeline.config import RunConfig
from pipeline.runs import Run
from serve import evaluate_routes
from serve.schemas import ApiError, EvaluateRequest, EvaluateSplitRequest
from serve.vllm_plan import request_defaults, request_problem, resolve_model_id

GENERATION_CALLS = ("completions", "chat")
CHECKED_FIELDS = ("max_tokens", "max_completion_tokens", "n", "logprobs", "top_logprobs", "prompt")

#: The routes served: Ray Serve LLM's OpenAI ones this server offers, then its own.
ENDPOINTS = {
    "models": lambda app: app.get("/v1/models"),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "completions": lambda app: app.post("/v1/completions"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "tokenize": lambda app: app.post("/tokenize"),
    "detokenize": lambda app: app.post("/detokenize"),
    "evaluate": lambda app: app.post("/v1/evaluate"),
    "evaluate_split": lambda app: app.post("/v1/evaluate/split"),
    "healthz": lambda app: app.get("/healthz"),
}


class RunIngress(OpenAiIngress):
    def __init__(self, llm_deployments, model_cards, *, lora_paths=None, evaluator, cfg: dict,
                 model_ids: dict[str, str], limits: dict[str, int]):
        from pipeline.models import context_window

        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths)
        self.cfg = RunConfig.model_validate(cfg)
        self.run = Run.of(self.cfg)
        self.evaluator = evaluator
        self.model_ids, self.limits = dict(model_ids), dict(limits)
        self.window = context_window(self.cfg.model)
        self.tokenizer = None

    def _model_id(self, requested: str) -> str:
        model_id = resolve_model_id(requested, self.model_ids)
        if model_id is None:
            raise ApiError(404, "model", f"{requested!r} is not served; served models: {list(self.model_ids.values())}")
        return model_id

    async def _get_response(self, *, body, call_method: str, raw_request=None):
        if getattr(body, "model", None) is not None:
            body.model = self._model_id(body.model)
        if call_method in GENERATION_CALLS:
            given = {k: getattr(body, k) for k in CHECKED_FIELDS if k in body.model_fields_set}
            if problem := request_problem(given, self.limits):
                raise ApiError(400, *problem)
            for key, value in request_defaults(given, self.limits).items():
                setattr(body, key, value)
        async for chunk in super()._get_response(body=body, call_method=call_method, raw_request=raw_request):
            yield chunk

    async def model(self, model_id: str):
        """The card of a served model (by model id or name); a LoRA one is its base's, renamed."""
        found = resolve_model_id(model_id, self.model_ids)
        if found is None:
            return None
        if found in self._model_cards:
            return self._model_cards[found]
        card = self._model_cards[found.split(":", 1)[0]]
        return card.model_copy(update={"id": found, "metadata": {**card.metadata, "model_id": found}})

    async def models(self) -> dict:
        cards = [await self.model(model_id) for model_id in self.model_ids.values()]
        return {"object": "list", "data": [card.model_dump() for card in cards]}

    async def evaluate(self, body: EvaluateRequest) -> dict:
        if self.tokenizer is None:
            from pipeline.models import load_tokenizer

            self.tokenizer = load_tokenizer(self.cfg.model)
        return await evaluate_routes.evaluate(body, self.cfg, self.run, self.evaluator, self.tokenizer, self.window)

    async def evaluate_split(self, body: EvaluateSplitRequest) -> dict:
        return await evaluate_routes.evaluate_split(body, self.cfg, self.run, self.evaluator)

    async def healthz(self) -> dict:
        stats = await self.evaluator.stats.remote()
        return {"status": "ok", "run": str(self.run.dir), "models": list(self.model_ids.values()),
                "replicas_answered": {"evaluator": stats is not None}}
