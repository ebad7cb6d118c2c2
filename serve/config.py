"""Config of the Ray Serve application (the `serve` section of a run config).

Light on imports on purpose: `pipeline.config` imports this module, so it must not pull in Ray,
torch or FastAPI.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.section import Section


class ReplicaConfig(Section):
    """Resources and autoscaling of one deployment's replica pool."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica (ray_actor_options.num_cpus).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (ray_actor_options.num_gpus); 0 on CPU machines.")
    torch_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads per replica; default: num_cpus rounded up (at least 1)."
    )
    min_replicas: int = Field(1, ge=1, description="Autoscaling lower bound (and the initial replica count).")
    max_replicas: int = Field(1, ge=1, description="Autoscaling upper bound; equal to min_replicas for a fixed pool.")
    target_ongoing_requests: float = Field(
        4.0, gt=0, description="Autoscaling target: ongoing requests per replica before scaling up."
    )
    max_ongoing_requests: int = Field(
        16, gt=0, description="Requests a replica accepts at once; keep it >= max_batch_size so batches can fill."
    )

    @model_validator(mode="after")
    def _check(self) -> "ReplicaConfig":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas: {self.max_replicas} is below min_replicas {self.min_replicas}")
        return self

    def deployment_options(self, health_check_period_s: float, health_check_timeout_s: float) -> dict:
        """Keyword arguments for `Deployment.options(...)`."""
        return {
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "initial_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            },
            "max_ongoing_requests": self.max_ongoing_requests,
            "health_check_period_s": health_check_period_s,
            "health_check_timeout_s": health_check_timeout_s,
        }

    def threads(self) -> int:
        return self.torch_threads or max(1, int(-(-self.num_cpus // 1)))


class ServeConfig(Section):
    host: str = Field("127.0.0.1", description="Address the HTTP proxy binds; 127.0.0.1 keeps it local.")
    port: int = Field(8000, gt=0, lt=65536, description="HTTP port.")
    app_name: str = Field("knowledge-lab", description="Name of the Serve application.")
    generation: ReplicaConfig = Field(
        default_factory=ReplicaConfig, description="Replica pool of the generation deployment (all models multiplexed)."
    )
    evaluator: ReplicaConfig = Field(
        default_factory=lambda: ReplicaConfig(num_cpus=0.5),
        description="Replica pool of the evaluator deployment.",
    )
    ingress: ReplicaConfig = Field(
        default_factory=lambda: ReplicaConfig(num_cpus=0.25, max_ongoing_requests=64),
        description="Replica pool of the HTTP ingress (validation and routing; no model).",
    )
    max_models_per_replica: int = Field(
        3, gt=0, description="Models a generation or evaluator replica keeps loaded; the least recently used is evicted."
    )
    max_batch_size: int = Field(8, gt=0, description="Prompts generated together in one batch (1 turns batching off).")
    batch_wait_timeout_s: float = Field(0.05, ge=0, description="How long a batch waits to fill before it runs.")
    default_max_tokens: int = Field(16, gt=0, description="max_tokens of a request that does not set it.")
    max_tokens_cap: int = Field(256, gt=0, description="Largest max_tokens a request may ask for.")
    max_prompts: int = Field(16, gt=0, description="Largest number of prompts in one /v1/completions request.")
    max_n: int = Field(4, gt=0, description="Largest `n` (completions per prompt) a request may ask for.")
    max_logprobs: int = Field(5, ge=0, description="Largest `logprobs` / `top_logprobs` (alternatives per token).")
    api_keys: list[str] = Field(
        default_factory=list,
        description="Accepted bearer keys (also KNOWLEDGE_LAB_API_KEYS, comma-separated); empty: no authentication.",
    )
    engine: Literal["hf", "vllm"] = Field(
        "hf", description="Generation engine: hf (this package's decoding, CPU or GPU) or vllm (Ray Serve LLM with "
        "vLLM; needs the gpu extra and GPUs: serve.generation.num_gpus per replica of each served model).",
    )
    vllm_engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="engine 'vllm': extra vLLM engine arguments for every served model (e.g. gpu_memory_utilization, "
        "enforce_eager, dtype); max_model_len is capped at the model's context window.",
    )
    max_items: int = Field(64, gt=0, description="Largest number of items in one /v1/evaluate request.")
    max_choices: int = Field(16, gt=1, description="Largest number of choices of one evaluated item.")
    max_body_bytes: int = Field(1_000_000, gt=0, description="Largest request body in bytes (413 above it).")
    eval_batch_size: int = Field(16, gt=0, description="Items scored per forward batch by the evaluator.")
    health_check_period_s: float = Field(10.0, gt=0, description="Seconds between replica health checks.")
    health_check_timeout_s: float = Field(30.0, gt=0, description="Seconds before a health check counts as failed.")

    @model_validator(mode="after")
    def _check(self) -> "ServeConfig":
        if self.default_max_tokens > self.max_tokens_cap:
            raise ValueError(
                f"default_max_tokens: {self.default_max_tokens} is above max_tokens_cap {self.max_tokens_cap}"
            )
        if self.engine == "vllm":
            gpus = self.generation.num_gpus
            if gpus <= 0:
                raise ValueError("generation.num_gpus: 0 with engine 'vllm'; vLLM runs on GPUs: set the GPUs per "
                                 "replica of each served model (1, 2, ... or a fraction such as 0.5 to share a GPU)")
            if gpus > 1 and gpus != int(gpus):
                raise ValueError(f"generation.num_gpus: {gpus:g} with engine 'vllm'; use a fraction below 1 (a "
                                 "shared GPU) or a whole number (tensor parallelism over that many GPUs)")
        if reserved := sorted(set(self.vllm_engine_kwargs) & VLLM_RESERVED_KWARGS):
            raise ValueError(f"vllm_engine_kwargs: {reserved} are set by the server (model and names from the run, "
                             "GPUs from generation.num_gpus, LoRA from the run's adapters; remote code never runs)")
        return self


#: vLLM engine arguments the server derives itself (see serve.vllm_plan).
VLLM_RESERVED_KWARGS = frozenset({
    "model", "served_model_name", "tokenizer", "trust_remote_code", "tensor_parallel_size", "distributed_executor_backend",
    "enable_lora", "max_lora_rank", "max_loras",
})
