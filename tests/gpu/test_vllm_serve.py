"""GPU only (skipped without CUDA): `pipeline serve` with serve.engine=vllm on a tiny run.

The run holds the tiny model as base, a full fine-tune `ft` (the tiny model with its output layer
shifted) and a LoRA adapter `ft+oracle`, on a local disk (adapters loaded in place). Ray Serve
LLM serves base and ft (a share of one GPU each) with ft+oracle multiplexed on the base's
replicas; the evaluator runs on CPU as on the hf engine. API keys are on.
"""

from __future__ import annotations

import httpx
import pytest
from ports import free_port
from served_models import save_lora_adapter, save_shifted_model

from pipeline.config import RunConfig
from pipeline.records import Doc, Item, write_records
from pipeline.runs import Run

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore")]
KEY = {"Authorization": "Bearer gpu-key"}
DOCS = [{"doc_id": "d0", "world": "reversals", "text": "Femp are more dangerous than glon.", "origin": "train"}]
ITEMS = [
    {"item_id": f"i{k}", "world": "reversals", "split": "reversal", "subtask": "comparison", "prompt": p,
     "choices": c, "answer_index": a}
    for k, (p, c, a) in enumerate([("Glon are", ["less dangerous than femp.", "more dangerous than femp."], 0),
                                   ("Femp are", ["less dangerous than glon.", "more dangerous than glon."], 1)])
]



@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, tiny_model_dir) -> RunConfig:
    pytest.importorskip("vllm")
    cfg = RunConfig.model_validate({
        "name": "served", "output_dir": str(tmp_path_factory.mktemp("vllm-runs")),
        "conditions": ["base", "ft", "ft+oracle"], "model": {"ref": str(tiny_model_dir), "max_context": 1024},
        "serve": {
            "engine": "vllm", "port": free_port(), "api_keys": ["gpu-key"], "max_tokens_cap": 16, "max_logprobs": 3,
            "generation": {"num_gpus": 0.3, "num_cpus": 0.25}, "evaluator": {"num_cpus": 0.5},
            "ingress": {"num_cpus": 0.1},
            "vllm_engine_kwargs": {"enforce_eager": True, "dtype": "bfloat16"},
        },
    })
    run = Run.of(cfg)
    run.save_config(cfg)
    write_records(run.path("data", "docs.parquet"), Doc, DOCS)
    write_records(run.path("data", "items.parquet"), Item, ITEMS)
    save_shifted_model(tiny_model_dir, run.path("models", "ft"))
    save_lora_adapter(tiny_model_dir, run.path("models", "ft+oracle"))
    return cfg


@pytest.fixture(scope="module")
def client(ray_cluster, run_cfg):
    from ray import serve

    from serve.app import start

    start(run_cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{run_cfg.serve.port}", headers=KEY, timeout=300) as http:
        yield http
    serve.shutdown()


def _complete(client, model: str, **extra) -> dict:
    resp = client.post("/v1/completions", json={"model": model, "prompt": "Hello", "max_tokens": 6,
                                                "temperature": 0, "ignore_eos": True, **extra})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_models_are_listed_under_their_vllm_ids(client):
    resp = client.get("/v1/models")
    assert resp.status_code == 200, resp.text
    assert [m["id"] for m in resp.json()["data"]] == ["base", "ft", "base:ft+oracle"]
    assert client.get("/v1/models/ft+oracle").json()["id"] == "base:ft+oracle"


def test_each_tuned_condition_answers_with_its_own_weights(client):
    texts = {}
    for model in ("base", "ft", "base:ft+oracle"):
        body = _complete(client, model)
        assert body["model"] == model
        assert body["usage"]["completion_tokens"] == 6
        texts[model] = body["choices"][0]["text"]
    assert len(set(texts.values())) == 3  # the full fine-tune and the adapter change the base's output
    assert _complete(client, "ft+oracle")["choices"][0]["text"] == texts["base:ft+oracle"]  # the condition's name
    chat = client.post("/v1/chat/completions", json={"model": "ft+oracle", "max_tokens": 4, "temperature": 0,
                                                     "messages": [{"role": "user", "content": "Hi"}]})
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["completion_tokens"] <= 4


def test_request_limits_and_unknown_models_name_the_field(client, run_cfg):
    for extra, status, param in [({"max_tokens": 17}, 400, "max_tokens"), ({"logprobs": 4}, 400, "logprobs"),
                                 ({"model": "ft+local"}, 404, "model")]:
        resp = client.post("/v1/completions", json={"model": "ft", "prompt": "Hello", **extra})
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["param"] == param
    body = client.post("/v1/completions", json={"model": "ft", "prompt": "Hello", "ignore_eos": True}).json()
    assert body["usage"]["completion_tokens"] == run_cfg.serve.default_max_tokens  # the config's default


def test_evaluate_split_scores_the_stored_items_like_the_offline_evaluator(client, run_cfg):
    from pipeline.conditions import condition_spec, load_condition_model
    from pipeline.evaluate import scoring

    resp = client.post("/v1/evaluate/split", json={"condition": "ft+oracle", "world": "reversals", "split": "reversal"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    stored = [{"support_fact_ids": [], **it} for it in ITEMS]
    model, tokenizer = load_condition_model(condition_spec(run_cfg, Run.of(run_cfg), "ft+oracle"))
    offline = scoring.score_items(model, tokenizer, stored, batch_size=run_cfg.serve.eval_batch_size)
    assert body["n"] == 2 and [r["item_id"] for r in body["items"]] == ["i0", "i1"]
    for got, want in zip(body["items"], offline, strict=True):
        assert got["choice_logprobs"] == pytest.approx(want["choice_logprobs"], abs=1e-6)
    resp = client.post("/v1/evaluate/split", json={"condition": "ft", "world": "moons", "split": "reversal"})
    assert resp.status_code == 404 and resp.json()["error"]["param"] == "world"


def test_keys_guard_ray_serve_llms_routes_and_the_evaluators(client, run_cfg):
    base = f"http://127.0.0.1:{run_cfg.serve.port}"
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/evaluate/split")]:
        resp = httpx.request(method, base + path, json={}, timeout=60)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(base + "/healthz", timeout=60).json()["models"] == ["base", "ft", "base:ft+oracle"]
