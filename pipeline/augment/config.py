"""Config of the `augment` stage.

The defaults are the CPU demo's: the embedded generator, greedy decoding, short outputs and a
capped number of prompts per world, so the whole stage stays within a few minutes on 2 cores.
A GPU cluster config raises the caps (or sets them to null: no cap) and picks `engine: vllm`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, model_validator

from pipeline.section import ModelConfig, Section


class AugmentConfig(Section):
    generator: ModelConfig = Field(default_factory=ModelConfig, description="The model that writes the augmentations; default: the model under study (`model`).")
    engine: Literal["hf", "vllm"] = Field(
        "hf", description="Generation engine: 'hf' (transformers, CPU or GPU) or 'vllm' (ray.data.llm; needs CUDA and the `gpu` extra)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device of the 'hf' engine: 'auto' uses CUDA when the cluster has GPUs."
    )
    num_actors: int = Field(1, gt=0, description="Generator actors in the Ray Data pool (GPU: one per GPU).")
    cpus_per_actor: float = Field(2.0, gt=0, description="CPUs reserved by each generator actor; also its torch thread count (CPU default: one actor on 2 cores).")
    batch_size: int = Field(8, gt=0, description="Prompts per generate() call of the 'hf' engine (and per vLLM batch).")
    shard_size: int = Field(16, gt=0, description="Prompts per output shard: the unit of resumption (a re-run skips finished shards).")
    samples_per_sentence: int = Field(1, gt=0, description="Local augmentation: generations per training sentence.")
    samples_per_doc: int = Field(1, gt=0, description="Global augmentation: generations per target document.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 = greedy (then only one sample per prompt makes sense).")
    local_max_new_tokens: int = Field(48, gt=0, description="Local augmentation: new tokens per generation.")
    global_max_new_tokens: int = Field(96, gt=0, description="Global augmentation: new tokens per generation.")
    max_sentences_per_world: int | None = Field(
        24, gt=0, description="Local augmentation: training sentences prompted per world (a seeded sample of the distinct ones); null = all."
    )
    max_docs_per_world: int | None = Field(
        8, gt=0, description="Global augmentation: target documents per world (taken group by group, so few prefixes are encoded); null = all."
    )
    oracle_max_per_world: PositiveInt | dict[str, PositiveInt | None] | None = Field(
        None, description="Oracle: at most this many sentences per world: first those that state what a test "
        "item asks, then what a validation item asks, then a seeded sample of the rest (in order); null = all, the true upper bound. A cap below "
        "the items' count trades the oracle's coverage (see the audit) for training time. A mapping caps each world it names "
        "(world: cap, null = all) and leaves the others whole, e.g. {reversals: 120, semantic: 60}."
    )
    global_prefix_max_tokens: int | None = Field(
        4096, gt=0, description="Global augmentation: tokens of the shared corpus prefix; a world's corpus beyond it (or beyond the "
        "context window) is split into groups of documents, each its own prefix. null = the context window.",
    )
    global_group_docs: int | None = Field(
        None, gt=0, description="Global augmentation: at most this many documents per prefix group; null = as many as fit."
    )
    min_words: int = Field(3, gt=0, description="Post-processing: shorter output sentences are dropped as degenerate.")
    max_words: int = Field(40, gt=0, description="Post-processing: longer output sentences are dropped as degenerate.")
    strict: bool = Field(
        False, description="A document or prompt longer than the context window is an error (default: skipped and counted in the audit)."
    )
    vllm_engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments for engine 'vllm' (prefix caching is always on)."
    )

    @model_validator(mode="after")
    def _check(self) -> "AugmentConfig":
        greedy = self.temperature == 0
        if greedy and self.samples_per_sentence > 1:
            raise ValueError(
                f"augment.samples_per_sentence: {self.samples_per_sentence} samples with temperature 0 (greedy) would be identical; set augment.temperature > 0"
            )
        if greedy and self.samples_per_doc > 1:
            raise ValueError(
                f"augment.samples_per_doc: {self.samples_per_doc} samples with temperature 0 (greedy) would be identical; set augment.temperature > 0"
            )
        if self.min_words > self.max_words:
            raise ValueError(f"augment.min_words: {self.min_words} is above augment.max_words {self.max_words}")
        if self.engine == "vllm" and self.device == "cpu":
            raise ValueError("augment.engine: 'vllm' runs only on CUDA GPUs; it cannot be combined with augment.device=cpu")
        return self



OracleCaps = int | dict[str, int | None] | None


def world_cap(caps: OracleCaps, world: str) -> int | None:
    """The cap of `world` in an `oracle_max_per_world` value: the number, the mapping's entry
    (a world it does not name: None), or None."""
    return caps.get(world) if isinstance(caps, dict) else caps
