"""HTTP ingress: OpenAI-compatible generation, tokenizer routes, the evaluator, health and stats.

The ingress holds no model, only tokenizers, used on its event loop alone (every route is async),
so no fast tokenizer is ever used by two threads at once. It authenticates (`serve.auth`), caps the body size
(`serve.limits`), validates every request (pydantic bodies, config limits, the prompt's length
against the context window), then calls the generation or evaluator deployment through handles
with `multiplexed_model_id` set to the model that must serve it; streamed requests use streaming
handles (`serve.streaming`). Bad input is a 4xx whose JSON names the field (OpenAI's error shape);
no bad input reaches a model.
"""


import asyncio
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.config import RunConfig
from pipeline.runs import Run
from serve import evaluate_routes
from serve.auth import ApiKeyAuth
from serve.checkpoints import served_models
from serve.limits import BodySizeLimit
from serve.openai_api import Plan, chat_plan, completion_plan, response
from serve.openai_schemas import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest, LenientBody,
                                  TokenizeRequest)
from serve.schemas import ApiError, EvaluateRequest, EvaluateSplitRequest, error_body, field_path
from serve.streaming import events, open_streams

log = logging.getLogger(__name__)
app = FastAPI(title="knowledge-lab", description="Serves a finished run: tuned models and the evaluator.")
app.add_middleware(BodySizeLimit)
app.add_middleware(ApiKeyAuth)  # added last, so it runs first: no body is read without a key


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
    if isinstance(cause, ApiError):
        return JSONResponse(cause.body(), cause.status)
    body = {"error": {"message": f"internal error: {type(cause).__name__}: {cause}"[:2000], "type": "server_error",
                      "param": None, "code": None}}
    return JSONResponse(body, 500)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body("path", f"{request.method} {request.url.path}: {err.detail}"), err.status_code)


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, cfg: dict, generator, evaluator, api_key_digests: tuple[str, ...] = ()):
        from pipeline.models import context_window

        self.cfg = RunConfig.model_validate(cfg)
        self.limits = self.cfg.serve
        self.run = Run.of(self.cfg)
        self.generator, self.evaluator = generator, evaluator
        self.window = context_window(self.cfg.model)
        self.tokenizers: dict[str, object] = {}
        app.state.max_body_bytes = self.limits.max_body_bytes
        app.state.api_key_digests = tuple(api_key_digests)

    # ------------------------------------------------------------------ models and tokenizers

    def _tokenizer(self, model: str):
        """The tokenizer of a served model (404 naming `model` if it is not served)."""
        served = served_models(self.cfg, self.run)
        if model not in served:
            raise ApiError(404, "model", f"{model!r} is not served; served models: {list(served)}")
        if model not in self.tokenizers:
            from pipeline.conditions import load_condition_tokenizer

            self.tokenizers[model] = load_condition_tokenizer(served[model])
        return self.tokenizers[model]

    def _model_card(self, name: str, spec) -> dict:
        folder = spec.folder or self.run.dir
        return {"id": name, "object": "model", "created": int(folder.stat().st_mtime), "owned_by": "knowledge-lab",
                "root": str(spec.folder) if spec.folder else self.cfg.model.ref, "max_model_len": self.window}

    @app.get("/v1/models")
    async def models(self) -> dict:
        return {"object": "list", "data": [self._model_card(n, s) for n, s in served_models(self.cfg, self.run).items()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(self, model_id: str) -> dict:
        served = served_models(self.cfg, self.run)
        if model_id not in served:
            raise ApiError(404, "model", f"{model_id!r} is not served; served models: {list(served)}")
        return self._model_card(model_id, served[model_id])

    @app.post("/tokenize")
    async def tokenize(self, body: TokenizeRequest) -> dict:
        ids = self._tokenizer(body.model)(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"]
        return {"count": len(ids), "max_model_len": self.window, "tokens": list(ids)}

    @app.post("/detokenize")
    async def detokenize(self, body: DetokenizeRequest) -> dict:
        tok = self._tokenizer(body.model)
        self._check_ids(tuple(body.tokens), tok, "tokens")
        return {"prompt": tok.decode(body.tokens)}

    @app.get("/tokenizer_info")
    async def tokenizer_info(self, model: str = "base") -> dict:
        tok = self._tokenizer(model)
        return {"tokenizer_class": type(tok).__name__, "eos_token": tok.eos_token, "bos_token": tok.bos_token,
                "pad_token": tok.pad_token, "chat_template": tok.chat_template, "model_max_length": self.window}

    # ------------------------------------------------------------------ generation

    @app.post("/v1/completions")
    async def completions(self, body: CompletionRequest):
        self._accept(body, "/v1/completions")
        tok = self._tokenizer(body.model)
        max_tokens = self._max_tokens(body.max_tokens, "max_tokens")
        self._cap(body.logprobs, self.limits.max_logprobs, "logprobs")
        prompts = body.prompts()
        if len(prompts) > self.limits.max_prompts:
            raise ApiError(400, "prompt", f"at most {self.limits.max_prompts} prompts per request, got {len(prompts)}")
        texts = []
        for i, prompt in enumerate(prompts):
            param = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
            if isinstance(prompt, tuple):
                self._check_ids(prompt, tok, param)
                texts.append(tok.decode(list(prompt)))
                self._check_length(len(prompt), max_tokens, param)
            else:
                texts.append(prompt)
                self._check_length(len(tok(prompt)["input_ids"]), max_tokens, param)
        return await self._run(completion_plan(body, max_tokens, texts), bool(body.stream), tok)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest):
        self._accept(body, "/v1/chat/completions")
        tok = self._tokenizer(body.model)
        max_tokens = self._max_tokens(body.max_new_tokens(),
                                      "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens")
        self._cap(body.top_logprobs, self.limits.max_logprobs, "top_logprobs")
        messages = body.template_messages()
        try:
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # noqa: BLE001 - a template that refuses these messages
            raise ApiError(400, "messages", f"the chat template refused these messages: {err}") from None
        self._check_length(len(tok(prompt, add_special_tokens=False)["input_ids"]), max_tokens, "messages")
        return await self._run(chat_plan(body, max_tokens, prompt), bool(body.stream), tok)

    def _accept(self, body: LenientBody, route: str) -> None:
        """Checks every generation body shares; unknown fields are logged, then ignored."""
        if ignored := body.ignored_fields():
            log.warning("%s: ignored unknown fields %s", route, ignored)
        body.check()
        self._cap(body.n, self.limits.max_n, "n")

    @staticmethod
    def _cap(value: int | None, cap: int, param: str) -> None:
        if value is not None and value > cap:
            raise ApiError(400, param, f"{value} is above the cap of {cap}")

    def _max_tokens(self, asked: int | None, param: str) -> int:
        max_tokens = asked if asked is not None else self.limits.default_max_tokens
        self._cap(max_tokens, self.limits.max_tokens_cap, param)
        return max_tokens

    def _check_length(self, prompt_tokens: int, max_tokens: int, param: str) -> None:
        if prompt_tokens + max_tokens > self.window:
            raise ApiError(400, param, f"{prompt_tokens} prompt tokens + max_tokens {max_tokens} exceed the context "
                                       f"window of {self.window} tokens")

    @staticmethod
    def _check_ids(ids: tuple[int, ...], tok, param: str) -> None:
        if bad := [t for t in ids if t >= len(tok)]:
            raise ApiError(400, param, f"token id {bad[0]} is outside the vocabulary (size {len(tok)})")

    async def _run(self, plan: Plan, stream: bool, tok):
        handle = self.generator.options(multiplexed_model_id=plan.model)

        def token_text(token_id: int) -> str:
            return tok.decode([token_id])

        if stream:
            streams = [handle.options(stream=True).stream.remote(r) for r in plan.requests]
            firsts = await open_streams(streams)
            return StreamingResponse(events(plan, firsts, streams, token_text), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        results = await asyncio.gather(*(handle.generate.remote(r) for r in plan.requests))
        return response(plan, list(results), token_text)

    # ------------------------------------------------------------------ evaluation

    @app.post("/v1/evaluate")
    async def evaluate(self, body: EvaluateRequest) -> dict:
        return await evaluate_routes.evaluate(body, self.cfg, self.run, self.evaluator, self._tokenizer("base"),
                                              self.window)

    @app.post("/v1/evaluate/split")
    async def evaluate_split(self, body: EvaluateSplitRequest) -> dict:
        return await evaluate_routes.evaluate_split(body, self.cfg, self.run, self.evaluator)

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
