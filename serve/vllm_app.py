"""The application of engine `vllm`: Ray Serve LLM deployments behind this server's ingress.

A thin shell around `serve.vllm_plan.plan_vllm` (the layout as data): one `LLMServer`
deployment per `LLMConfig` (`ray.serve.llm.build_llm_deployment`), their model cards, the
`Evaluator` deployment, and `serve.vllm_ingress.RunIngress` made into a FastAPI ingress with
`ray.serve.llm.ingress.make_fastapi_ingress`, the same assembly `build_openai_app` does, with
this server's routes added. The FastAPI app is Ray Serve LLM's own (its error handling, CORS,
metrics and request ids) plus this server's API-key and body-size middleware and error shapes.
Imported only when `serve.engine` is `vllm` (Ray Serve LLM needs vLLM).
"""

from __future__ import annotations

import json
import logging

from pipeline.conditions import ConditionSpec
from pipeline.config import RunConfig
from pipeline.runs import Run
from serve.checkpoints import served_models
from serve.vllm_plan import plan_vllm

log = logging.getLogger(__name__)


def build_vllm_app(cfg: RunConfig, raw: dict, evaluator, digests: tuple[str, ...]):
    """The bound application: RunIngress -> (one LLMServer per served set of weights, Evaluator).
    `raw`: the config the replicas get (no keys); `digests`: the API keys' SHA-256 digests."""
    from functools import partial

    from ray import serve
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
    from ray.serve.llm import LLMConfig, build_llm_deployment
    from ray.serve.llm.ingress import make_fastapi_ingress

    from pipeline.models import context_window
    from serve.vllm_ingress import ENDPOINTS, RunIngress
    from serve.vllm_server import RunAdapterLoader

    run = Run.of(cfg)
    served = served_models(cfg, run)
    models_root = str(run.path("models").resolve())
    plan = plan_vllm(cfg.serve, cfg.model, served, context_window(cfg.model), models_root, adapter_ranks(served))
    llm_configs = [LLMConfig(**kwargs) for kwargs in plan.llm_configs]
    servers = {}
    for c in llm_configs:
        bind = {"model_downloader": partial(RunAdapterLoader, adapters=plan.adapters)} if c.lora_config else None
        servers[c.model_id] = build_llm_deployment(c, bind_kwargs=bind)
    cards = {c.model_id: to_model_metadata(c.model_id, c) for c in llm_configs}
    log.info("vllm engine: model ids %s", ", ".join(plan.model_ids.values()))
    s = cfg.serve
    ingress = make_fastapi_ingress(RunIngress, endpoint_map=ENDPOINTS, app=fastapi_app(s.max_body_bytes, digests))
    options = s.ingress.deployment_options(s.health_check_period_s, s.health_check_timeout_s)
    return serve.deployment(ingress, name="Ingress", **options).bind(
        llm_deployments=servers, model_cards=cards, evaluator=evaluator, cfg=raw,
        model_ids=plan.model_ids, limits=plan.limits)


def fastapi_app(max_body_bytes: int, digests: tuple[str, ...]):
    """Ray Serve LLM's FastAPI app with this server's middleware (keys first, then the body size)
    and error shapes (a 4xx naming the field)."""
    from fastapi.exceptions import RequestValidationError
    from ray.llm._internal.serve.core.ingress.ingress import init

    from serve.auth import ApiKeyAuth
    from serve.http_api import _api_error, _invalid_body
    from serve.limits import BodySizeLimit
    from serve.schemas import ApiError

    app = init()
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(ApiKeyAuth)  # added last, so it runs first: no body is read without a key
    app.state.max_body_bytes = max_body_bytes
    app.state.api_key_digests = tuple(digests)
    return app


def adapter_ranks(served: dict[str, ConditionSpec]) -> dict[str, int]:
    """Each LoRA adapter's largest rank, from its adapter_config.json (local or in run storage)."""
    ranks = {}
    for name, spec in served.items():
        if spec.adapter:
            config = json.loads((spec.folder / "adapter_config.json").read_text())
            ranks[name] = max([int(config["r"]), *map(int, (config.get("rank_pattern") or {}).values())])
    return ranks
