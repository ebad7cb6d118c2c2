"""Build and run the Serve application of a finished run.

Engine `hf` (default), three deployments: `Ingress` (FastAPI, validation and routing),
`Generator` (every served model multiplexed on one pool, batched generation) and `Evaluator`
(likelihood scoring with the offline evaluator's function). Engine `vllm`: Ray Serve LLM's vLLM
deployments (the base with its LoRA adapters multiplexed, one per full fine-tune) and the same
`Evaluator` behind `serve.vllm_ingress.RunIngress`, on the same routes (`serve.vllm_app`).
Replica resources, autoscaling, batching and limits come from the run config's `serve` section.

- `python -m pipeline serve CONFIG` calls `main(cfg, run)`: it starts Ray, binds the HTTP proxy
  to serve.host:serve.port (127.0.0.1:8000 by default) and blocks until Ctrl-C.
- `serve run serve/serve_config.yaml` imports `app_from_args`, which takes the config path (and
  optional overrides) from the Serve config file's `args`.
"""

from __future__ import annotations

import time

from pipeline.config import RunConfig, config_to_dict, load_config
from pipeline.runs import Run


def build_app(cfg: RunConfig):
    """The bound application for cfg's run folder: engine hf, Ingress -> (Generator, Evaluator);
    engine vllm, Ray Serve LLM's deployments behind `serve.vllm_ingress.RunIngress`, with the
    same Evaluator (`serve.vllm_app`).

    API keys (serve.api_keys and KNOWLEDGE_LAB_API_KEYS, read here) reach the ingress only as
    digests; the config the replicas get carries none."""
    from serve.auth import configured_keys, digest, warn_if_exposed
    from serve.engines import require_engine
    from serve.evaluator import Evaluator

    s = cfg.serve
    require_engine(s.engine, cluster_gpus())
    keys = configured_keys(s.api_keys)
    warn_if_exposed(s.host, keys)
    raw = config_to_dict(cfg)
    raw["serve"]["api_keys"] = []
    if Run.of(cfg).dir.is_dir():
        raw["output_dir"] = str(Run.of(cfg).dir.resolve().parent)  # replicas may run elsewhere
    health = (s.health_check_period_s, s.health_check_timeout_s)
    evaluator = Evaluator.options(**s.evaluator.deployment_options(*health)).bind(
        raw, s.max_models_per_replica, s.eval_batch_size, s.evaluator.threads(),
    )
    digests = tuple(sorted({digest(k) for k in keys}))
    if s.engine == "vllm":
        from serve.vllm_app import build_vllm_app

        return build_vllm_app(cfg, raw, evaluator, digests)
    from serve.generator import Generator
    from serve.http_api import Ingress

    generator = Generator.options(**s.generation.deployment_options(*health)).bind(
        raw, s.max_models_per_replica, s.max_batch_size, s.batch_wait_timeout_s, s.generation.threads(),
    )
    return Ingress.options(**s.ingress.deployment_options(*health)).bind(raw, generator, evaluator, digests)


def cluster_gpus() -> float | None:
    """GPUs of the connected Ray cluster (the vllm engine's GPUs may all be on workers), None
    without a Ray connection."""
    import ray

    return ray.cluster_resources().get("GPU", 0.0) if ray.is_initialized() else None


def app_from_args(args: dict):
    """Application builder for `serve run serve/serve_config.yaml` (args: config, overrides)."""
    if "config" not in args:
        raise ValueError("args.config: path of the run config is required, e.g. configs/demo.yaml")
    cfg = load_config(args["config"], list(args.get("overrides") or []))
    _require_run(cfg)
    if cfg.serve.engine == "vllm" and cluster_gpus() is not None:
        wait_for_replica_gpus(cfg)  # GPU workers that scale from zero are asked for before the check
    return build_app(cfg)


def _require_run(cfg: RunConfig) -> None:
    run = Run.of(cfg)
    if not run.path("data", "items.parquet").is_file():
        raise FileNotFoundError(
            f"{run.dir}: not a finished run (no data/items.parquet); run `python -m pipeline run CONFIG` first"
        )


def wait_for_replica_gpus(cfg: RunConfig) -> None:
    """A deployment whose replicas ask for GPUs waits for the autoscaler to start GPU workers
    (up to ray.gpu_wait_s), then fails naming the key; it never silently runs on CPU."""
    import math

    from pipeline.ray_session import wait_for_gpus

    pools = {name: getattr(cfg.serve, name) for name in ("generation", "evaluator", "ingress")}
    for name, pool in pools.items():
        if pool.num_gpus > 0:
            wait_for_gpus(math.ceil(pool.num_gpus), f"serve.{name}.num_gpus={pool.num_gpus:g}", cfg.ray.gpu_wait_s)


def start(cfg: RunConfig):
    """Start Serve on cfg.serve.host:port and deploy the app; returns the ingress handle."""
    from ray import serve

    wait_for_replica_gpus(cfg)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    return serve.run(build_app(cfg), name=cfg.serve.app_name, route_prefix="/")


def main(cfg: RunConfig, run: Run) -> int:
    """`python -m pipeline serve CONFIG`: serve the run until Ctrl-C."""
    from ray import serve

    from pipeline.ray_session import ray_session

    _require_run(cfg)
    with ray_session(cfg.ray):
        try:  # Ctrl-C is how a server stops, also while it is still starting
            start(cfg)
            print(f"serving {run.dir} on http://{cfg.serve.host}:{cfg.serve.port} "
                  "(GET /v1/models, POST /v1/completions, /v1/chat/completions, /v1/evaluate); Ctrl-C stops",
                  flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", flush=True)
        finally:
            serve.shutdown()
    return 0
