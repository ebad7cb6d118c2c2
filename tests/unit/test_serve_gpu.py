"""GPU only (skipped without CUDA): serving's decoding on CUDA, and the vllm engine's check."""

from __future__ import annotations

import pytest

from pipeline.models import load_model, load_tokenizer
from serve.decoding import SamplingParams
from serve.generation import GenerationRequest, generate_batch

pytestmark = pytest.mark.gpu


def test_greedy_decoding_on_cuda_matches_the_cpu(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    reqs = [GenerationRequest("Hello there", SamplingParams(8, logprobs=2)),
            GenerationRequest("x", SamplingParams(5, temperature=0.8, seed=3))]
    cpu = generate_batch(load_model(str(tiny_model_dir)), tok, reqs)
    gpu = generate_batch(load_model(str(tiny_model_dir), device="cuda"), tok, reqs)
    assert gpu[0].token_ids == cpu[0].token_ids
    assert [e.logprob for e in gpu[0].logprobs] == pytest.approx([e.logprob for e in cpu[0].logprobs], abs=1e-3)
    again = generate_batch(load_model(str(tiny_model_dir), device="cuda"), tok, reqs)
    assert again[1].token_ids == gpu[1].token_ids  # a seeded sample repeats on the GPU too


def test_vllm_engine_check_on_a_gpu_machine():
    import importlib.util

    from serve.engines import EngineError, require_engine

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(EngineError) as err:
            require_engine("vllm")
        assert "the vllm package" in str(err.value) and "CUDA" not in str(err.value)
    else:
        require_engine("vllm")  # CUDA and vLLM: the engine serves
