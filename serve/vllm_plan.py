"""The vllm engine's application layout, as plain data: no Ray, no vLLM, no I/O.

`plan_vllm` turns the `serve` config and the run's served models (`serve.checkpoints.served_models`)
into the keyword dicts of Ray Serve LLM's `LLMConfig` (one per served set of weights) and what the
ingress needs; `serve.vllm_app` builds the application from it. Layout:

- `base`: the run's model; model id `base`. When the run has LoRA adapter folders
  (`models/<condition>/adapter_config.json`), they are multiplexed on the base's replicas as vLLM
  LoRA adapters (`lora_config`), with Ray Serve LLM's model ids `base:<condition>` (its
  `base_model_id:lora_id` convention over `<adapters>/<lora_id>/`, the run's `models/` layout as
  it stands). They load through `serve.vllm_server.RunAdapterLoader` from `adapters` (the run's
  models/ folder or URI), not through `lora_config.dynamic_lora_loading_path`: Ray takes only
  s3/gs/azure URIs there (a run on a local or shared disk could not be served) and reads s3
  with boto3, which the gpu extra does not install; run storage's own code reads every location.
- every full fine-tune (`models/<condition>/` with weights): its own `LLMConfig`, model id
  `<condition>`.
- Clients may also send a LoRA condition's own name (`ft+oracle` for `base:ft+oracle`): the
  ingress maps `model_ids` both ways, so the CPU engine's model names keep working.

Each model's weights are put on the node of each of its replicas by
`serve.vllm_server.ResolveModelOnNode` (an `LLMConfig.callback_config`), so `model_source` is the
run's own model reference (an embedded model, a folder, a hub id or a URI in run storage), not a
path on the driver's disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.conditions import ConditionSpec
from pipeline.section import ModelConfig
from serve.config import ReplicaConfig, ServeConfig

BASE = "base"
#: The values vLLM accepts for max_lora_rank (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
CALLBACK = "serve.vllm_server.ResolveModelOnNode"
#: Request fields the ingress caps, by the config key that caps them.
LIMITS = ("max_tokens_cap", "default_max_tokens", "max_n", "max_logprobs", "max_prompts")


class PlanError(ValueError):
    """The run cannot be served with the vllm engine as configured; says why and what to do."""


@dataclass(frozen=True)
class VllmPlan:
    llm_configs: list[dict]  # keyword dicts of ray.serve.llm.LLMConfig, base first
    model_ids: dict[str, str]  # served model (base, a condition) -> the model id vLLM serves it under
    adapters: str | None  # where the LoRA adapters load from (the run's models/ folder or URI); None: none
    limits: dict[str, int]  # request limits the ingress checks (LIMITS)


def plan_vllm(serve: ServeConfig, model: ModelConfig, served: dict[str, ConditionSpec], window: int,
              models_root: str, adapter_ranks: dict[str, int]) -> VllmPlan:
    """The layout for `served` (base first, then the tuned folders); `window`: the run model's
    context window; `models_root`: the run's `models/` folder or URI; `adapter_ranks`: each LoRA
    adapter's largest rank (its adapter_config.json)."""
    for name in served:
        if ":" in name:
            raise PlanError(f"models/{name}: a ':' in a served model's name clashes with Ray Serve LLM's "
                            "'base:adapter' model ids; rename the folder")
    adapters = [name for name, spec in served.items() if spec.adapter]
    model_ids = {name: f"{BASE}:{name}" if spec.adapter else name for name, spec in served.items()}
    base = _llm_config(serve, BASE, model, window)
    if adapters:
        rank = max(adapter_ranks[name] for name in adapters)
        base["lora_config"] = {"max_num_adapters_per_replica": serve.max_models_per_replica}
        base["engine_kwargs"].update(enable_lora=True, max_lora_rank=lora_rank(rank),
                                     max_loras=serve.max_models_per_replica)
    full = [_llm_config(serve, name, spec.model, window) for name, spec in served.items()
            if name != BASE and not spec.adapter]
    return VllmPlan([base, *full], model_ids, models_root.rstrip("/") if adapters else None,
                    {key: getattr(serve, key) for key in LIMITS})


def lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank`."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise PlanError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")


def gpu_layout(num_gpus: float) -> tuple[int, float]:
    """(tensor_parallel_size, GPUs per vLLM worker) for serve.generation.num_gpus: a fraction
    shares one GPU, a whole number N shards the model over N GPUs."""
    if num_gpus < 1:
        return 1, num_gpus
    return int(num_gpus), 1.0


def engine_kwargs(serve: ServeConfig, model: ModelConfig, window: int) -> dict:
    """vLLM engine arguments: the config's extras, the context window as max_model_len (a smaller
    one asked for is kept), the output cap as a server-wide max_new_tokens, the log-prob cap."""
    tp, per_worker = gpu_layout(serve.generation.num_gpus)
    extra = dict(serve.vllm_engine_kwargs)
    out = {"dtype": model.dtype, "max_logprobs": serve.max_logprobs, **extra,
           "max_model_len": min(int(extra.get("max_model_len") or window), window),
           "override_generation_config": {**extra.get("override_generation_config", {}),
                                          "max_new_tokens": serve.max_tokens_cap},
           "tensor_parallel_size": tp}
    if per_worker < 1:  # share the GPU: claim only this replica's part of its memory
        out.setdefault("gpu_memory_utilization", round(0.9 * per_worker, 3))
    return out


def deployment_config(pool: ReplicaConfig, serve: ServeConfig) -> dict:
    """Ray Serve options of a model's replicas; GPUs come with its placement group, not here."""
    opts = pool.deployment_options(serve.health_check_period_s, serve.health_check_timeout_s)
    opts["ray_actor_options"] = {"num_cpus": pool.num_cpus}
    return opts


def _llm_config(serve: ServeConfig, model_id: str, model: ModelConfig, window: int) -> dict:
    _, per_worker = gpu_layout(serve.generation.num_gpus)
    return {
        "model_loading_config": {"model_id": model_id, "model_source": model.ref},
        "engine_kwargs": engine_kwargs(serve, model, window),
        "deployment_config": deployment_config(serve.generation, serve),
        # one node per replica: its weights are resolved there (serve.vllm_server)
        "placement_group_config": {"bundle_per_worker": {"GPU": per_worker}, "strategy": "STRICT_PACK"},
        "callback_config": {"callback_class": CALLBACK, "callback_kwargs": {"model": model.model_dump(mode="json")}},
    }


# ---------------------------------------------------------------------------- requests


def resolve_model_id(requested: str, model_ids: dict[str, str]) -> str | None:
    """The model id vLLM serves `requested` under (a model id, or a served model's own name)."""
    if requested in model_ids.values():
        return requested
    return model_ids.get(requested)


def request_problem(fields: dict, limits: dict) -> tuple[str, str] | None:
    """(param, why) for the first field a client set above the config's limits, else None.
    `fields`: the fields the client set (a completion or chat body)."""
    caps = {"max_tokens": "max_tokens_cap", "max_completion_tokens": "max_tokens_cap", "n": "max_n",
            "top_logprobs": "max_logprobs"}
    if type(fields.get("logprobs")) is int:  # completions: a count (chat's is a bool)
        caps["logprobs"] = "max_logprobs"
    for param, key in caps.items():
        value = fields.get(param)
        if value is not None and value > limits[key]:
            return param, f"{value} is above the cap of {limits[key]}"
    prompts = _prompt_count(fields.get("prompt"))
    if prompts > limits["max_prompts"]:
        return "prompt", f"at most {limits['max_prompts']} prompts per request, got {prompts}"
    return None


def request_defaults(fields: dict, limits: dict) -> dict:
    """Fields to set on a generation body that leaves them out: max_tokens, as the CPU engine does."""
    if fields.get("max_tokens") is None and fields.get("max_completion_tokens") is None:
        return {"max_tokens": limits["default_max_tokens"]}
    return {}


def _prompt_count(prompt) -> int:
    """Texts or token-id lists in a completion's `prompt` (a text or one id list is one)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        return len(prompt)
    return 0 if prompt is None else 1

