"""HTTP ingress: OpenAI-compatible generation, the evaluator, health and stats (FastAPI on Serve).

The ingress holds no model. It validates every request (pydantic bodies, config limits, the
prompt's length against the context window with the base tokenizer), then calls the generation
or evaluator deployment through handles with `multiplexed_model_id` set to the model that must
serve it. Bad input is a 4xx whose JSON names the field (OpenAI's error shape); no bad input
reaches a model.
"""

import asyncio
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.config import RunConfig
from pipeline.runs import Run
from serve.checkpoints import served_models, weights_for_condition
from serve.schemas import (ApiError, ChatCompletionRequest, CompletionRequest, EvaluateRequest,
                           EvaluateSplitRequest, SamplingFields, error_body, field_path)

DEFAULT_MAX_BODY_BYTES = 1_000_000  # until the ingress sets the configured limit
app = FastAPI(title="knowledge-lab", description="Serves a finished run: tuned models and the evaluator.")


class BodySizeLimit:
    """ASGI middleware: a body above `app.state.max_body_bytes` gets 413 before any parsing."""

    def __init__(self, asgi_app):
        self.asgi_app = asgi_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.asgi_app(scope, receive, send)
        limit = getattr(getattr(scope.get("app"), "state", None), "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(scope, receive, send, limit)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                return await _too_large(scope, receive, send, limit)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.asgi_app(scope, replay, send)


async def _too_large(scope, receive, send, limit: int) -> None:
    response = JSONResponse(error_body("body", f"request body is larger than {limit} bytes"), status_code=413)
    await response(scope, receive, send)


app.add_middleware(BodySizeLimit)


@app.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, err: RequestValidationError) -> JSONResponse:
    errors = err.errors()
    # The first offending field; of its errors (one per union branch), the deepest names it best.
    first = max((e for e in errors if e["loc"][:2] == errors[0]["loc"][:2]), key=lambda e: len(e["loc"]))
    if first["type"] == "json_invalid":
        return JSONResponse(error_body("body", f"malformed JSON: {first.get('ctx', {}).get('error', '')}".strip()), 400)
    param = field_path(tuple(first["loc"]), unknown_field=first["type"] == "extra_forbidden")
    msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        msg = "required field is missing"
    return JSONResponse(error_body(param, msg), 400)


@app.exception_handler(ApiError)
async def _api_error(request: Request, err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), err.status)


@app.exception_handler(Exception)
async def _internal_error(request: Request, err: Exception) -> JSONResponse:
    """Not the caller's fault (a replica failed): still JSON, with the cause."""
    cause = getattr(err, "cause", None) or err  # a replica's exception arrives wrapped in a RayTaskError
    body = {"error": {"message": f"internal error: {type(cause).__name__}: {cause}"[:2000], "type": "server_error",
                      "param": None, "code": None}}
    return JSONResponse(body, 500)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body("path", f"{request.method} {request.url.path}: {err.detail}"), err.status_code)


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, cfg: dict, generator, evaluator):
        from pipeline.models import context_window, load_tokenizer

        self.cfg = RunConfig.model_validate(cfg)
        self.limits = self.cfg.serve
        self.run = Run.of(self.cfg)
        self.generator, self.evaluator = generator, evaluator
        self.tokenizer = load_tokenizer(self.cfg.model)
        self.window = context_window(self.cfg.model)
        app.state.max_body_bytes = self.limits.max_body_bytes

    # ------------------------------------------------------------------ generation

    @app.get("/v1/models")
    def models(self) -> dict:
        data = []
        for name, spec in served_models(self.cfg, self.run).items():
            folder = spec.folder or self.run.dir
            data.append({"id": name, "object": "model", "created": int(folder.stat().st_mtime),
                         "owned_by": "knowledge-lab", "root": str(spec.folder) if spec.folder else self.cfg.model.ref})
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(self, body: CompletionRequest) -> dict:
        prompts = body.prompts()
        if len(prompts) > self.limits.max_prompts:
            raise ApiError(400, "prompt", f"at most {self.limits.max_prompts} prompts per request, got {len(prompts)}")
        params = self._sampling(body)
        for i, prompt in enumerate(prompts):
            self._check_length(prompt, params["max_tokens"], "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]")
        outs = await asyncio.gather(*(self._generate(body.model, p, params, True) for p in prompts))
        choices = [{"index": i, "text": o["text"], "finish_reason": o["finish_reason"], "logprobs": None}
                   for i, o in enumerate(outs)]
        return self._envelope("cmpl", "text_completion", body.model, choices, outs)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest) -> dict:
        params = self._sampling(body)
        messages = [m.model_dump() for m in body.messages]
        try:
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # noqa: BLE001 - a template that refuses these messages
            raise ApiError(400, "messages", f"the chat template refused these messages: {err}") from None
        self._check_length(prompt, params["max_tokens"], "messages", add_special_tokens=False)
        out = await self._generate(body.model, prompt, params, False)
        choice = {"index": 0, "message": {"role": "assistant", "content": out["text"]},
                  "finish_reason": out["finish_reason"], "logprobs": None}
        return self._envelope("chatcmpl", "chat.completion", body.model, [choice], [out])

    def _sampling(self, body: SamplingFields) -> dict:
        served = list(served_models(self.cfg, self.run))
        if body.model not in served:
            raise ApiError(404, "model", f"{body.model!r} is not served; served models: {served}")
        max_tokens = body.max_tokens if body.max_tokens is not None else self.limits.default_max_tokens
        if max_tokens > self.limits.max_tokens_cap:
            raise ApiError(400, "max_tokens", f"{max_tokens} is above the cap of {self.limits.max_tokens_cap}")
        return {"max_tokens": max_tokens, "temperature": body.temperature, "top_p": body.top_p,
                "stop": body.stop_strings()}

    def _check_length(self, prompt: str, max_tokens: int, param: str, add_special_tokens: bool = True) -> None:
        n = len(self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
        if n + max_tokens > self.window:
            raise ApiError(400, param, f"{n} prompt tokens + max_tokens {max_tokens} exceed the context window "
                                       f"of {self.window} tokens")

    async def _generate(self, model: str, prompt: str, params: dict, add_special_tokens: bool) -> dict:
        handle = self.generator.options(multiplexed_model_id=model)
        return await handle.generate.remote({"prompt": prompt, "add_special_tokens": add_special_tokens, **params})

    @staticmethod
    def _envelope(prefix: str, kind: str, model: str, choices: list, outs: list[dict]) -> dict:
        prompt_tokens = sum(o["prompt_tokens"] for o in outs)
        completion_tokens = sum(o["completion_tokens"] for o in outs)
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": model,
                "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                              "total_tokens": prompt_tokens + completion_tokens}}

    # ------------------------------------------------------------------ evaluation

    @app.post("/v1/evaluate")
    async def evaluate(self, body: EvaluateRequest) -> dict:
        if len(body.items) > self.limits.max_items:
            raise ApiError(400, "items", f"at most {self.limits.max_items} items per request, got {len(body.items)}")
        for i, item in enumerate(body.items):
            if len(item.choices) > self.limits.max_choices:
                raise ApiError(400, f"items[{i}].choices",
                               f"at most {self.limits.max_choices} choices, got {len(item.choices)}")
            longest = max(item.choices, key=lambda c: len(self.tokenizer(" " + c)["input_ids"]))
            self._check_length(item.prompt + " " + longest, 0, f"items[{i}]")
        handle = self._evaluator_for(body.condition)
        items = [item.model_dump() for item in body.items]
        results = await handle.score_items.remote(body.condition, items, body.world)
        return {"condition": body.condition, "results": results}

    @app.post("/v1/evaluate/split")
    async def evaluate_split(self, body: EvaluateSplitRequest) -> dict:
        handle = self._evaluator_for(body.condition)
        return await handle.score_split.remote(body.condition, body.world, body.split)

    def _evaluator_for(self, condition: str):
        extra = list(getattr(self.cfg.evaluate, "checkpoints", None) or {})  # the evaluator's named extra models
        try:
            weights = condition if condition in extra else weights_for_condition(condition, self.cfg, self.run)
        except KeyError:
            known = ["base", "icl", *[m for m in served_models(self.cfg, self.run) if m != "base"], *extra]
            raise ApiError(404, "condition", f"{condition!r} is not available in this run; available: {known}") from None
        return self.evaluator.options(multiplexed_model_id=weights)

    # ------------------------------------------------------------------ operations

    @app.get("/healthz")
    async def healthz(self) -> dict:
        gen, ev = await asyncio.gather(self.generator.stats.remote(), self.evaluator.stats.remote())
        return {"status": "ok", "run": str(self.run.dir), "models": list(served_models(self.cfg, self.run)),
                "replicas_answered": {"generator": gen is not None, "evaluator": ev is not None}}

    @app.get("/v1/stats")
    async def stats(self) -> dict:
        gen, ev = await asyncio.gather(self.generator.stats.remote(), self.evaluator.stats.remote())
        return {"generator": gen, "evaluator": ev}

    def check_health(self) -> None:
        if not self.run.dir.is_dir():
            raise RuntimeError(f"{self.run.dir}: the run folder is gone")
