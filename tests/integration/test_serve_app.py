"""The Serve application on a fabricated run folder: every endpoint over HTTP on 127.0.0.1.

The run holds the tiny model as base, a "tuned" copy whose output layer is shifted (so its
greedy text differs from the base's), a LoRA adapter, and a few docs and items. One replica per
deployment holding at most one model, so alternating two models must load and evict.
"""

from __future__ import annotations

import httpx
import pytest
from ports import free_port
from served_models import save_lora_adapter, save_shifted_model

from pipeline.conditions import condition_spec, context_window, load_condition_model
from pipeline.config import RunConfig
from pipeline.evaluate import scoring as offline_scoring
from pipeline.evaluate.icl import icl_contexts
from pipeline.models import load_tokenizer
from pipeline.records import Doc, Item, write_records
from pipeline.runs import Run
from serve.checkpoints import served_models
from serve.decoding import SamplingParams
from serve.generation import GenerationRequest, generate_batch

pytestmark = pytest.mark.filterwarnings("ignore")

DOCS = [
    {"doc_id": "d0", "world": "reversals", "text": "Femp are more dangerous than glon.", "origin": "train"},
    {"doc_id": "d1", "world": "reversals", "text": "Troff are brighter than yomp.", "origin": "train"},
]
ITEMS = [
    {"item_id": f"i{k}", "world": "reversals", "split": "reversal" if k < 3 else "rephrase", "subtask": "comparison",
     "prompt": p, "choices": c, "answer_index": a}
    for k, (p, c, a) in enumerate([
        ("Glon are", ["less dangerous than femp.", "more dangerous than femp."], 0),
        ("Yomp are", ["less bright than troff.", "brighter than troff."], 0),
        ("Femp are", ["less dangerous than glon.", "more dangerous than glon."], 1),
        ("Troff are", ["brighter than yomp.", "less bright than yomp."], 0),
    ])
]



@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, tiny_model_dir) -> RunConfig:
    root = tmp_path_factory.mktemp("serve-runs")
    cfg = RunConfig.model_validate({
        "name": "served", "output_dir": str(root), "conditions": ["base", "icl", "ft", "ft+oracle"],
        "model": {"ref": str(tiny_model_dir), "max_context": 1024},
        "serve": {
            "port": free_port(), "max_models_per_replica": 1, "max_batch_size": 4, "batch_wait_timeout_s": 0.2,
            "max_tokens_cap": 32, "max_prompts": 3, "max_items": 3, "max_body_bytes": 4000,
            "generation": {"num_cpus": 0.5}, "evaluator": {"num_cpus": 0.5}, "ingress": {"num_cpus": 0.1},
            "health_check_period_s": 2,
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
    with httpx.Client(base_url=f"http://127.0.0.1:{run_cfg.serve.port}", timeout=120) as http:
        yield http
    serve.shutdown()


def _local_greedy(cfg: RunConfig, model_name: str, prompt: str, max_tokens: int, chat: bool = False) -> str:
    model, _ = load_condition_model(served_models(cfg, Run.of(cfg))[model_name])
    req = GenerationRequest(prompt, SamplingParams(max_tokens), add_special_tokens=not chat)
    return generate_batch(model, load_tokenizer(cfg.model), [req])[0].text


def _error(resp: httpx.Response, status: int, param: str) -> str:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["param"] == param, err
    assert err["message"].startswith(param + ":"), err
    return err["message"]


# ---------------------------------------------------------------------------- generation


def test_models_lists_base_and_every_tuned_condition(client):
    resp = client.get("/v1/models")
    assert resp.status_code == 200
    assert [m["id"] for m in resp.json()["data"]] == ["base", "ft", "ft+oracle"]
    assert all(m["object"] == "model" for m in resp.json()["data"])


def test_completion_serves_the_requested_model(client, run_cfg):
    outs = {}
    for name in ("base", "ft", "ft+oracle"):
        resp = client.post("/v1/completions", json={"model": name, "prompt": "Hello", "max_tokens": 6, "temperature": 0})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["object"] == "text_completion" and body["model"] == name
        outs[name] = body["choices"][0]["text"]
        assert outs[name] == _local_greedy(run_cfg, name, "Hello", 6)
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert len(set(outs.values())) == 3  # three different models answered


def test_completion_with_several_prompts_keeps_their_order(client, run_cfg):
    prompts = ["Hello", "A much longer prompt", "xy"]
    resp = client.post("/v1/completions", json={"model": "ft", "prompt": prompts, "max_tokens": 4, "temperature": 0})
    assert resp.status_code == 200, resp.text
    texts = [c["text"] for c in sorted(resp.json()["choices"], key=lambda c: c["index"])]
    assert texts == [_local_greedy(run_cfg, "ft", p, 4) for p in prompts]


def test_chat_completion_applies_the_chat_template(client, run_cfg):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    resp = client.post("/v1/chat/completions", json={"model": "ft", "messages": messages, "max_tokens": 5, "temperature": 0})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    prompt = load_tokenizer(run_cfg.model).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert body["choices"][0]["message"]["content"] == _local_greedy(run_cfg, "ft", prompt, 5, chat=True)
    assert body["usage"]["prompt_tokens"] == len(load_tokenizer(run_cfg.model)(prompt, add_special_tokens=False)["input_ids"])


def test_concurrent_requests_are_batched_and_answer_like_single_ones(client, run_cfg):
    import concurrent.futures as cf

    prompts = ["one", "two two", "three three three", "four"]
    before = client.get("/v1/stats").json()["generator"]["batch_sizes"]
    with cf.ThreadPoolExecutor(4) as pool:
        resps = list(pool.map(lambda p: client.post("/v1/completions", json={
            "model": "base", "prompt": p, "max_tokens": 3, "temperature": 0}), prompts))
    assert [r.json()["choices"][0]["text"] for r in resps] == [_local_greedy(run_cfg, "base", p, 3) for p in prompts]
    after = client.get("/v1/stats").json()["generator"]["batch_sizes"]
    grown = {int(k): v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    assert sum(k * v for k, v in grown.items()) == len(prompts)
    assert max(grown) > 1, f"no batch held more than one request: {grown}"


def test_multiplexing_loads_and_evicts_least_recently_used(client):
    def ask(model):
        resp = client.post("/v1/completions", json={"model": model, "prompt": "ab", "max_tokens": 1})
        assert resp.status_code == 200, resp.text

    ask("ft")  # whatever was loaded before, "ft" is the one model held now
    start = client.get("/v1/stats").json()["generator"]
    assert start["loaded"] == ["ft"]
    for model in ("base", "ft", "base", "ft"):
        ask(model)
    stats = client.get("/v1/stats").json()["generator"]
    assert stats["loaded"] == ["ft"]
    assert stats["loads"]["ft"] - start["loads"]["ft"] == 2
    assert stats["loads"]["base"] - start["loads"].get("base", 0) == 2
    assert stats["evictions"]["base"] - start["evictions"].get("base", 0) == 2


# ---------------------------------------------------------------------------- evaluator


def _offline_scores(cfg: RunConfig, condition: str, items: list[dict]) -> list[dict]:
    """What the offline evaluator computes for these items under `condition`."""
    run = Run.of(cfg)
    spec = condition_spec(cfg, run, "base" if condition == "icl" else condition)
    model, tokenizer = load_condition_model(spec)
    prefix = None
    if condition == "icl":
        contexts = icl_contexts(cfg, DOCS_FULL, ITEMS_FULL, tokenizer, context_window(spec))
        prefix = offline_scoring.encode_prefix(model, tokenizer, contexts[items[0]["world"]].text)
    return offline_scoring.score_items(model, tokenizer, items, prefix=prefix, batch_size=cfg.serve.eval_batch_size)


DOCS_FULL = [{"source_doc_id": None, "facts": [], "completion_start": 0, **d} for d in DOCS]
ITEMS_FULL = [{"support_fact_ids": [], **it} for it in ITEMS]


@pytest.mark.parametrize("condition", ["base", "icl", "ft", "ft+oracle"])
def test_evaluate_equals_the_offline_scorer(client, run_cfg, condition):
    asked = [{"prompt": it["prompt"], "choices": it["choices"]} for it in ITEMS[:3]]
    resp = client.post("/v1/evaluate", json={"condition": condition, "items": asked})
    assert resp.status_code == 200, resp.text
    served = resp.json()["results"]
    offline = _offline_scores(run_cfg, condition, [{**it, "item_id": f"items[{k}]", "world": "reversals"}
                                                    for k, it in enumerate(asked)])
    for got, want in zip(served, offline, strict=True):
        assert got["choice_num_tokens"] == want["choice_num_tokens"]
        assert got["choice_num_chars"] == want["choice_num_chars"]
        assert got["choice_logprobs"] == pytest.approx(want["choice_logprobs"], abs=1e-6)
        assert (got["prediction"], got["prediction_norm"]) == offline_scoring.predictions(
            want["choice_logprobs"], want["choice_num_chars"])


def test_conditions_give_different_scores(client):
    asked = {"items": [{"prompt": ITEMS[0]["prompt"], "choices": ITEMS[0]["choices"]}]}
    logprobs = {c: client.post("/v1/evaluate", json={**asked, "condition": c}).json()["results"][0]["choice_logprobs"]
                for c in ("base", "icl", "ft")}
    assert logprobs["icl"] != pytest.approx(logprobs["base"], abs=1e-4)  # the context was read
    assert logprobs["ft"] != pytest.approx(logprobs["base"], abs=1e-4)
    assert client.post("/v1/evaluate", json={**asked, "condition": "icl", "world": "reversals"}).json()["results"][0][
        "choice_logprobs"] == pytest.approx(logprobs["icl"], abs=1e-6)
    _error(client.post("/v1/evaluate", json={**asked, "condition": "icl", "world": "moons"}), 404, "world")


@pytest.mark.parametrize("condition", ["icl", "ft"])
def test_evaluate_split_scores_the_stored_items(client, run_cfg, condition):
    resp = client.post("/v1/evaluate/split", json={"condition": condition, "world": "reversals", "split": "reversal"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    stored = [it for it in ITEMS_FULL if it["split"] == "reversal"]
    offline = _offline_scores(run_cfg, condition, stored)
    correct = [offline_scoring.predictions(s["choice_logprobs"], s["choice_num_chars"])[0] == it["answer_index"]
               for s, it in zip(offline, stored)]
    assert body["n"] == len(stored) == 3
    assert body["accuracy"] == pytest.approx(sum(correct) / len(correct))
    assert [r["item_id"] for r in body["items"]] == [it["item_id"] for it in stored]
    for got, want in zip(body["items"], offline, strict=True):
        assert got["choice_logprobs"] == pytest.approx(want["choice_logprobs"], abs=1e-6)
    assert body["chance"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------- operations


def test_healthz(client, run_cfg):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    assert resp.json()["models"] == ["base", "ft", "ft+oracle"]


def test_deployments_use_the_configured_resources(client, run_cfg):
    from ray import serve
    from ray.serve.context import _get_global_client

    status = serve.status().applications[run_cfg.serve.app_name]
    assert status.status == "RUNNING"
    assert set(status.deployments) == {"Ingress", "Generator", "Evaluator"}
    assert all(d.status == "HEALTHY" for d in status.deployments.values())
    stats = client.get("/v1/stats").json()
    assert stats["generator"]["resources"] == {"CPU": 0.5}
    assert stats["evaluator"]["resources"] == {"CPU": 0.5}
    details = _get_global_client().get_serve_details()["applications"][run_cfg.serve.app_name]["deployments"]
    generator = details["Generator"]["deployment_config"]
    assert generator["autoscaling_config"]["min_replicas"] == generator["autoscaling_config"]["max_replicas"] == 1
    assert generator["max_ongoing_requests"] == 16
    assert generator["health_check_period_s"] == 2
    assert generator["ray_actor_options"]["num_cpus"] == 0.5


# ---------------------------------------------------------------------------- bad input

GOOD = {"model": "ft", "prompt": "Hello", "max_tokens": 2}
CHAT = {"model": "ft", "messages": [{"role": "user", "content": "Hi"}]}
ITEM = {"prompt": "Glon are", "choices": ["less dangerous than femp.", "more dangerous than femp."]}
BAD_REQUESTS = [
    # (path, body, status, field)
    ("/v1/completions", {**GOOD, "max_tokens": "16"}, 400, "max_tokens"),
    ("/v1/completions", {**GOOD, "max_tokens": 33}, 400, "max_tokens"),
    ("/v1/completions", {**GOOD, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {**GOOD, "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {**GOOD, "prompt": 5}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "prompt": ""}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "prompt": ["a", "  "]}, 400, "prompt[1]"),
    ("/v1/completions", {**GOOD, "prompt": ["a", "b", "c", "d"]}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "prompt": "word " * 220}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "prompt": ["a", "word " * 220]}, 400, "prompt[1]"),
    ("/v1/completions", {**GOOD, "model": "ft+global"}, 404, "model"),
    ("/v1/completions", {k: v for k, v in GOOD.items() if k != "model"}, 400, "model"),
    ("/v1/completions", {**GOOD, "best_of": 2}, 400, "best_of"),
    ("/v1/completions", {**GOOD, "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {**GOOD, "n": 5}, 400, "n"),
    ("/v1/completions", {**GOOD, "n": 0}, 400, "n"),
    ("/v1/completions", {**GOOD, "logprobs": 6}, 400, "logprobs"),
    ("/v1/completions", {**GOOD, "prompt": [5, 9999]}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "prompt": []}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "suffix": "end"}, 400, "suffix"),
    ("/v1/completions", {**GOOD, "logit_bias": {"5": 1.0}}, 400, "logit_bias"),
    ("/v1/completions", {**GOOD, "presence_penalty": 3}, 400, "presence_penalty"),
    ("/v1/completions", {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/completions", [GOOD], 400, "body"),
    ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "robot", "content": "Hi"}]}, 400, "messages[0].role"),
    ("/v1/chat/completions", {**CHAT, "model": "icl"}, 404, "model"),
    ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, 400, "top_logprobs"),
    ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 6}, 400, "top_logprobs"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 33}, 400, "max_completion_tokens"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, 400, "tools"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content[0].type"),
    ("/v1/evaluate", {"condition": "base", "items": [{**ITEM, "choices": []}]}, 400, "items[0].choices"),
    ("/v1/evaluate", {"condition": "base", "items": [{**ITEM, "choices": ["one"]}]}, 400, "items[0].choices"),
    ("/v1/evaluate", {"condition": "base", "items": [ITEM, {**ITEM, "choices": ["a", " "]}]}, 400, "items[1].choices[1]"),
    ("/v1/evaluate", {"condition": "base", "items": [{**ITEM, "prompt": ""}]}, 400, "items[0].prompt"),
    ("/v1/evaluate", {"condition": "base", "items": [ITEM] * 4}, 400, "items"),
    ("/v1/evaluate", {"condition": "base", "items": []}, 400, "items"),
    ("/v1/evaluate", {"condition": "base", "items": [{**ITEM, "prompt": "word " * 220}]}, 400, "items[0]"),
    ("/v1/evaluate", {"condition": "ft+local", "items": [ITEM]}, 404, "condition"),
    ("/v1/evaluate", {"condition": "base", "items": "all"}, 400, "items"),
    ("/v1/evaluate/split", {"condition": "base", "world": "moons", "split": "reversal"}, 404, "world"),
    ("/v1/evaluate/split", {"condition": "base", "world": "reversals", "split": "moon"}, 404, "split"),
    ("/v1/evaluate/split", {"condition": "nope", "world": "reversals", "split": "reversal"}, 404, "condition"),
    ("/v1/evaluate", {"condition": "icl", "items": [ITEM], "world": 3}, 400, "world"),
]


@pytest.mark.parametrize("path,body,status,field", BAD_REQUESTS, ids=[f"{p}:{f}:{i}" for i, (p, _, _, f) in enumerate(BAD_REQUESTS)])
def test_bad_request_is_a_4xx_naming_the_field(client, path, body, status, field):
    _error(client.post(path, json=body), status, field)


def test_malformed_json_names_the_body(client):
    msg = _error(client.post("/v1/completions", content=b'{"model": "ft", "prompt": ', headers={"content-type": "application/json"}), 400, "body")
    assert "malformed JSON" in msg


def test_oversized_body_is_413(client, run_cfg):
    big = {**GOOD, "prompt": "x" * run_cfg.serve.max_body_bytes}
    _error(client.post("/v1/completions", json=big), 413, "body")
    chunks = (b"x" * 1000 for _ in range(10))  # no content-length: the size is counted while reading
    _error(client.post("/v1/completions", content=chunks, headers={"content-type": "application/json"}), 413, "body")


def test_a_broken_checkpoint_is_a_json_server_error_and_others_keep_serving(client, run_cfg):
    folder = Run.of(run_cfg).path("models", "ft+local")
    folder.mkdir()
    try:
        (folder / "config.json").write_text("{}")  # a broken export: no model type, unreadable weights
        (folder / "model.safetensors").write_bytes(b"not safetensors")
        resp = client.post("/v1/completions", json=GOOD | {"model": "ft+local"})
        assert resp.status_code == 500, resp.text
        err = resp.json()["error"]
        assert err["type"] == "server_error" and str(folder) in err["message"]
    finally:
        import shutil

        shutil.rmtree(folder)
    assert client.post("/v1/completions", json=GOOD).status_code == 200


def test_unknown_route_and_wrong_method_are_json_errors(client):
    _error(client.get("/v1/nothing"), 404, "path")
    _error(client.get("/v1/completions"), 405, "path")
