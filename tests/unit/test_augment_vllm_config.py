"""The vLLM engine's configuration and its refusal to run without CUDA (no vLLM needed here)."""

import pytest

from pipeline.augment.config import AugmentConfig
from pipeline.augment.vllm_engine import EngineUnavailable, check_vllm_usable, processor_config, request_rows
from pipeline.config import ConfigError, load_config


def test_vllm_without_gpus_is_a_clear_error():
    with pytest.raises(EngineUnavailable, match="needs CUDA GPUs.*augment.engine=hf"):
        check_vllm_usable(0, vllm_installed=True)
    with pytest.raises(EngineUnavailable, match=r"knowledge-lab\[gpu\]"):
        check_vllm_usable(1, vllm_installed=False)
    check_vllm_usable(2, vllm_installed=True)


def test_processor_config_keeps_our_prompts_and_turns_prefix_caching_on():
    cfg = AugmentConfig(engine="vllm", batch_size=32, num_actors=4,
                        vllm_engine_kwargs={"enable_prefix_caching": False, "gpu_memory_utilization": 0.8})
    pc = processor_config(cfg, "/models/gen", max_model_len=8192)
    assert pc.model_source == "/models/gen" and pc.batch_size == 32
    assert pc.engine_kwargs["enable_prefix_caching"] is True  # never off: the global prefix is shared
    assert pc.engine_kwargs["max_model_len"] == 8192 and pc.engine_kwargs["gpu_memory_utilization"] == 0.8
    assert pc.should_continue_on_error is True


def test_request_rows_are_prefix_plus_suffix():
    shards = [{"shard": "global-w-0000", "prefix": "P|", "prefix_key": "w/g000",
               "requests": [{"request_id": "r1", "prompt": "S1", "max_new_tokens": 9, "seed": 5}]}]
    assert request_rows(shards) == [{"request_id": "r1", "shard": "global-w-0000", "prompt": "P|S1", "max_new_tokens": 9, "seed": 5}]


def test_vllm_on_cpu_device_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\naugment: {engine: vllm, device: cpu}\n")
    with pytest.raises(ConfigError, match="augment.engine: 'vllm' runs only on CUDA"):
        load_config(path)
