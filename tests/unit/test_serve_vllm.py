"""The vllm engine's layout (`serve.vllm_plan`) and weight loading (`serve.vllm_server`), on CPU.

The plan is plain data: the LLMConfig keyword dicts are checked value by value, then validated
against Ray Serve LLM's own LLMConfig model (importable without vLLM), so a misspelt field or a
value Ray refuses fails here and not first on a GPU cluster.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from pipeline.conditions import ConditionSpec
from pipeline.config import ConfigError, RunConfig, load_config
from pipeline.section import ModelConfig
from serve.vllm_plan import (PlanError, gpu_layout, lora_rank, plan_vllm, request_defaults, request_problem,
                             resolve_model_id)

BASE_MODEL = ModelConfig(ref="smollm2-135m-instruct", max_context=2048)
LOCAL = "/runs/r/models"
REMOTE = "s3://bucket/runs/r/models"


def _serve(**kw):
    serve = {"engine": "vllm", "generation": {"num_gpus": 1, "num_cpus": 2, "min_replicas": 1, "max_replicas": 3,
                                              "target_ongoing_requests": 8, "max_ongoing_requests": 64},
             "max_tokens_cap": 128, "default_max_tokens": 32, "max_logprobs": 4, "max_n": 2, "max_prompts": 5,
             "max_models_per_replica": 4, **kw}
    return RunConfig.model_validate({"name": "r", "serve": serve}).serve


def _served(root: str, lora: tuple[str, ...] = ("ft+oracle",), full: tuple[str, ...] = ("ft",)):
    out = {"base": ConditionSpec("base", BASE_MODEL, BASE_MODEL)}
    for name in full:
        out[name] = ConditionSpec(name, BASE_MODEL.model_copy(update={"ref": f"{root}/{name}"}), BASE_MODEL)
    for name in lora:
        out[name] = ConditionSpec(name, BASE_MODEL.model_copy(update={"ref": f"{root}/{name}"}), BASE_MODEL, adapter=True)
    return out


def _plan(serve=None, root=LOCAL, ranks=None, **served):
    return plan_vllm(serve or _serve(), BASE_MODEL, _served(root, **served), 2048, root, ranks or {"ft+oracle": 16})


def test_base_multiplexes_the_lora_conditions_and_each_full_finetune_is_its_own_model():
    plan = _plan()
    assert plan.model_ids == {"base": "base", "ft": "ft", "ft+oracle": "base:ft+oracle"}
    base, ft = plan.llm_configs
    assert base["model_loading_config"] == {"model_id": "base", "model_source": "smollm2-135m-instruct"}
    assert ft["model_loading_config"] == {"model_id": "ft", "model_source": f"{LOCAL}/ft"}
    assert base["lora_config"] == {"max_num_adapters_per_replica": 4}  # adapters load with RunAdapterLoader
    assert plan.adapters == LOCAL
    assert "lora_config" not in ft and "enable_lora" not in ft["engine_kwargs"]
    assert base["engine_kwargs"].items() >= {"enable_lora": True, "max_lora_rank": 16, "max_loras": 4}.items()
    assert base["callback_config"] == {"callback_class": "serve.vllm_server.ResolveModelOnNode",
                                       "callback_kwargs": {"model": BASE_MODEL.model_dump(mode="json")}}
    assert ft["callback_config"]["callback_kwargs"]["model"]["ref"] == f"{LOCAL}/ft"


def test_a_run_in_object_storage_loads_its_models_from_there():
    plan = plan_vllm(_serve(), BASE_MODEL, _served(REMOTE), 2048, REMOTE + "/", {"ft+oracle": 8})
    assert plan.adapters == REMOTE and plan.model_ids["ft+oracle"] == "base:ft+oracle"
    ft = plan.llm_configs[1]
    assert ft["model_loading_config"]["model_source"] == f"{REMOTE}/ft"
    assert ft["callback_config"]["callback_kwargs"]["model"]["ref"] == f"{REMOTE}/ft"  # fetched on each replica's node


def test_a_run_without_adapters_has_no_lora_config():
    plan = _plan(lora=(), full=("ft", "ft+local"))
    assert [c["model_loading_config"]["model_id"] for c in plan.llm_configs] == ["base", "ft", "ft+local"]
    assert "lora_config" not in plan.llm_configs[0] and plan.adapters is None


def test_replicas_take_the_generation_pool_and_gpus_come_with_the_placement_group():
    base = _plan().llm_configs[0]
    assert base["deployment_config"] == {
        "ray_actor_options": {"num_cpus": 2.0},
        "autoscaling_config": {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 8.0},
        "max_ongoing_requests": 64, "health_check_period_s": 10.0, "health_check_timeout_s": 30.0}
    assert base["placement_group_config"] == {"bundle_per_worker": {"GPU": 1.0}, "strategy": "STRICT_PACK"}
    assert base["engine_kwargs"]["tensor_parallel_size"] == 1


@pytest.mark.parametrize("gpus,tp,per_worker", [(0.25, 1, 0.25), (1, 1, 1.0), (2, 2, 1.0), (4, 4, 1.0)])
def test_gpus_per_replica(gpus, tp, per_worker):
    assert gpu_layout(gpus) == (tp, per_worker)
    kw = _plan(_serve(generation={"num_gpus": gpus})).llm_configs[1]
    assert kw["engine_kwargs"]["tensor_parallel_size"] == tp
    assert kw["placement_group_config"]["bundle_per_worker"] == {"GPU": per_worker}
    if gpus < 1:  # a shared GPU: this replica's share of its memory
        assert kw["engine_kwargs"]["gpu_memory_utilization"] == pytest.approx(0.9 * gpus)
    else:
        assert "gpu_memory_utilization" not in kw["engine_kwargs"]


def test_engine_kwargs_cap_the_context_and_the_output():
    kw = _plan().llm_configs[0]["engine_kwargs"]
    assert kw["max_model_len"] == 2048 and kw["dtype"] == "float32" and kw["max_logprobs"] == 4
    assert kw["override_generation_config"] == {"max_new_tokens": 128}
    extra = {"max_model_len": 100_000, "gpu_memory_utilization": 0.5, "dtype": "bfloat16", "enforce_eager": True}
    kw = _plan(_serve(vllm_engine_kwargs=extra, generation={"num_gpus": 0.5})).llm_configs[1]["engine_kwargs"]
    assert kw["max_model_len"] == 2048  # never beyond the model's window
    assert (kw["gpu_memory_utilization"], kw["dtype"], kw["enforce_eager"]) == (0.5, "bfloat16", True)
    assert _plan(_serve(vllm_engine_kwargs={"max_model_len": 512})).llm_configs[0]["engine_kwargs"]["max_model_len"] == 512


@pytest.mark.parametrize("rank,allowed", [(1, 1), (4, 8), (8, 8), (16, 16), (20, 32), (300, 320)])
def test_lora_rank_rounds_up_to_what_vllm_accepts(rank, allowed):
    assert lora_rank(rank) == allowed
    assert _plan(ranks={"ft+oracle": rank}).llm_configs[0]["engine_kwargs"]["max_lora_rank"] == allowed


def test_plan_refusals_say_why():
    with pytest.raises(PlanError, match="LoRA rank 1024"):
        lora_rank(1024)
    served = {**_served(LOCAL), "a:b": ConditionSpec("a:b", BASE_MODEL, BASE_MODEL)}
    with pytest.raises(PlanError, match="models/a:b"):
        plan_vllm(_serve(), BASE_MODEL, served, 2048, LOCAL, {"ft+oracle": 8})


@pytest.mark.parametrize("root", [LOCAL, REMOTE])
def test_every_llm_config_is_one_ray_serve_llm_accepts(root):
    configs = pytest.importorskip("ray.llm._internal.serve.core.configs.llm_config")
    from ray.llm._internal.common.placement import PlacementGroupConfig

    for kwargs in _plan(_serve(generation={"num_gpus": 0.5}), root=root).llm_configs:
        c = configs.LLMConfig(**kwargs)
        assert PlacementGroupConfig(**c.placement_group_config).bundle_per_worker.GPU == 0.5
        assert c.model_id == kwargs["model_loading_config"]["model_id"]
        assert c.max_request_context_length == 2048
        assert c.callback_config.callback_class == "serve.vllm_server.ResolveModelOnNode"
    base = configs.LLMConfig(**_plan(root=root).llm_configs[0])
    assert base.multiplex_config().max_num_models_per_replica == 4
    assert base.lora_config.dynamic_lora_loading_path is None
    with pytest.raises(ValueError):  # Ray's own loader takes no local run folder: why RunAdapterLoader
        configs.LoraConfig(dynamic_lora_loading_path=LOCAL)


def test_model_ids_take_the_conditions_names_too():
    ids = _plan().model_ids
    assert resolve_model_id("ft+oracle", ids) == "base:ft+oracle"
    assert resolve_model_id("base:ft+oracle", ids) == "base:ft+oracle"
    assert (resolve_model_id("ft", ids), resolve_model_id("base", ids)) == ("ft", "base")
    assert resolve_model_id("nope", ids) is None and resolve_model_id("base:nope", ids) is None


def test_request_limits_name_the_field():
    limits = _plan().limits
    assert limits == {"max_tokens_cap": 128, "default_max_tokens": 32, "max_n": 2, "max_logprobs": 4, "max_prompts": 5}
    assert request_problem({"max_tokens": 128, "n": 2, "logprobs": 4, "prompt": ["a"] * 5}, limits) is None
    assert request_problem({"max_tokens": 129}, limits) == ("max_tokens", "129 is above the cap of 128")
    assert request_problem({"max_completion_tokens": 200}, limits) == ("max_completion_tokens", "200 is above the cap of 128")
    assert request_problem({"n": 3}, limits) == ("n", "3 is above the cap of 2")
    assert request_problem({"logprobs": 5}, limits) == ("logprobs", "5 is above the cap of 4")
    assert request_problem({"logprobs": True, "top_logprobs": 5}, limits) == ("top_logprobs", "5 is above the cap of 4")
    assert request_problem({"prompt": ["a"] * 6}, limits) == ("prompt", "at most 5 prompts per request, got 6")
    assert request_problem({"prompt": [[1, 2]] * 6}, limits)[0] == "prompt"
    assert request_problem({"prompt": list(range(50))}, limits) is None  # one prompt of token ids


def test_a_request_without_max_tokens_gets_the_configured_default():
    limits = _plan().limits
    assert request_defaults({}, limits) == {"max_tokens": 32}
    assert request_defaults({"max_tokens": 5}, limits) == {}
    assert request_defaults({"max_completion_tokens": 5}, limits) == {}


@pytest.mark.parametrize("text,key", [
    ("serve: {engine: vllm}\n", "serve: generation.num_gpus: 0 with engine 'vllm'"),
    ("serve: {engine: vllm, generation: {num_gpus: 1.5}}\n", "serve: generation.num_gpus: 1.5"),
    ("serve: {vllm_engine_kwargs: {trust_remote_code: true}}\n", "serve: vllm_engine_kwargs: ['trust_remote_code']"),
    ("serve: {vllm_engine_kwargs: {model: x, tensor_parallel_size: 2}}\n", "['model', 'tensor_parallel_size']"),
])
def test_vllm_config_errors_name_the_key(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n" + text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert key in str(err.value)


# ---------------------------------------------------------------------------- weights on the replica's node


def _engine_config():
    engine = SimpleNamespace(hf_model_id="smollm2-135m-instruct", mirror_config="a mirror")
    return SimpleNamespace(model_id="base", get_engine_config=lambda: engine), engine


def test_the_callback_points_vllm_at_the_model_resolved_on_this_node(tiny_model_dir):
    from serve.vllm_server import ResolveModelOnNode

    llm_config, engine = _engine_config()
    callback = ResolveModelOnNode(llm_config=llm_config, model={"ref": "tiny-random"})
    asyncio.run(callback.run_callback("on_before_node_init"))
    assert engine.hf_model_id == str(tiny_model_dir) and engine.mirror_config is None


def test_the_callback_fails_loudly_on_a_model_it_cannot_find(tmp_path):
    from serve.vllm_server import ResolveModelOnNode

    llm_config, engine = _engine_config()
    callback = ResolveModelOnNode(llm_config=llm_config, model={"ref": str(tmp_path / "gone")})
    with pytest.raises(Exception, match="on_before_node_init") as err:
        asyncio.run(callback.run_callback("on_before_node_init"))
    assert "not a model folder" in str(err.value.__cause__)
    assert engine.hf_model_id == "smollm2-135m-instruct"


def test_local_adapters_are_loaded_in_place(tmp_path):
    from fastapi import HTTPException

    from serve.vllm_server import RunAdapterLoader

    (tmp_path / "ft+oracle").mkdir()
    (tmp_path / "ft+oracle" / "adapter_config.json").write_text(json.dumps({"r": 4}))
    loader = RunAdapterLoader(adapters=f"file://{tmp_path}", download_timeout_s=30, max_tries=3)
    disk = asyncio.run(loader.load_model_from_config("base:ft+oracle"))
    assert (disk.model_id, disk.local_path) == ("base:ft+oracle", str(tmp_path / "ft+oracle"))
    assert asyncio.run(loader.load_model_from_config("base:ft+oracle")) is disk  # one id per adapter
    with pytest.raises(HTTPException) as err:
        asyncio.run(loader.load_model_from_config("base:ft"))
    assert err.value.status_code == 404 and "no LoRA adapter" in err.value.detail


def test_vllm_engine_counts_gpus_on_the_clusters_workers(monkeypatch):
    import importlib.util

    import torch

    from serve.engines import EngineError, require_engine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a head node without a GPU
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    require_engine("vllm", cluster_gpus=4)
    with pytest.raises(EngineError) as err:
        require_engine("vllm", cluster_gpus=0)
    assert str(err.value).startswith("serve.engine: 'vllm' needs a CUDA GPU")
    assert "the Ray cluster has no GPU" in str(err.value) and "vllm package" not in str(err.value)
