"""The vLLM engine (GPU only), through ray.data.llm.

The same rendered prompts as the HF engine go to a `vLLMEngineProcessorConfig` processor, one
row per request, with automatic prefix caching on: the global strategy's shared prefix is
computed once per engine and its KV blocks reused for every target document. vLLM and
`ray[llm]` come with the optional `gpu` extra and are imported only when this engine is used;
configured without CUDA GPUs in the cluster it fails at once with a message saying what to do.
"""

from __future__ import annotations

import importlib.util
from typing import Iterator

from pipeline.augment.config import AugmentConfig

INSTALL_HINT = "pip install 'knowledge-lab[gpu]'"


class EngineUnavailable(RuntimeError):
    """The configured engine cannot run here (no CUDA GPUs, or vLLM not installed)."""


def check_vllm_usable(cluster_gpus: float, vllm_installed: bool | None = None) -> None:
    if cluster_gpus <= 0:
        raise EngineUnavailable(
            "augment.engine=vllm needs CUDA GPUs, and this Ray cluster has none; "
            "use augment.engine=hf (transformers, runs on CPU) or run on a GPU cluster"
        )
    if vllm_installed is None:
        vllm_installed = importlib.util.find_spec("vllm") is not None
    if not vllm_installed:
        raise EngineUnavailable(f"augment.engine=vllm needs the vllm package; install the GPU extra: {INSTALL_HINT}")


def processor_config(cfg: AugmentConfig, model_source: str, max_model_len: int):
    """The ray.data.llm processor config for this stage: our own prompts, prefix caching on."""
    from ray.data.llm import vLLMEngineProcessorConfig

    engine_kwargs = {"max_model_len": max_model_len, "dtype": cfg.generator.dtype, **cfg.vllm_engine_kwargs}
    engine_kwargs["enable_prefix_caching"] = True
    return vLLMEngineProcessorConfig(
        model_source=model_source,
        engine_kwargs=engine_kwargs,
        batch_size=cfg.batch_size,
        concurrency=cfg.num_actors,
        chat_template_stage=False,  # prompts arrive rendered with the generator's chat template
        tokenize_stage=False,
        detokenize_stage=False,
        should_continue_on_error=True,  # a failed row is recorded as an error, the job goes on
    )


def request_rows(shards: list[dict]) -> list[dict]:
    """One row per request: the full prompt (prefix + suffix) and its sampling parameters."""
    rows = []
    for shard in shards:
        for r in shard["requests"]:
            rows.append({
                "request_id": r["request_id"], "shard": shard["shard"], "prompt": shard["prefix"] + r["prompt"],
                "max_new_tokens": r["max_new_tokens"], "seed": r["seed"],
            })
    return rows


def run_vllm(shards: list[dict], cfg: AugmentConfig, model_source: str, max_model_len: int) -> Iterator[dict]:
    """Result rows (request_id, shard, text, status, prompt_tokens, new_tokens) as they finish."""
    import ray
    from ray.data.llm import build_processor

    check_vllm_usable(ray.cluster_resources().get("GPU", 0))
    temperature = cfg.temperature

    def preprocess(row: dict) -> dict:
        return {
            "request_id": row["request_id"], "shard": row["shard"], "prompt": row["prompt"],
            "sampling_params": {"temperature": temperature, "max_tokens": int(row["max_new_tokens"]), "seed": int(row["seed"])},
        }

    def postprocess(row: dict) -> dict:
        text = (row.get("generated_text") or "").strip()
        return {
            "request_id": row["request_id"], "shard": row["shard"], "text": text,
            "status": "ok" if text else "empty", "prompt_tokens": int(row.get("num_input_tokens") or 0),
            "new_tokens": int(row.get("num_generated_tokens") or 0),
        }

    processor = build_processor(processor_config(cfg, model_source, max_model_len), preprocess=preprocess, postprocess=postprocess)
    ds = processor(ray.data.from_items(request_rows(shards)))
    for row in ds.iter_rows():
        error = row.get("__inference_error__")
        if error:  # error rows skip postprocess: record them
            yield {"request_id": row["request_id"], "shard": row["shard"], "text": "", "status": f"error: {error}"[:500],
                   "prompt_tokens": 0, "new_tokens": 0}
        else:
            yield {k: row[k] for k in ("request_id", "shard", "text", "status", "prompt_tokens", "new_tokens")}
