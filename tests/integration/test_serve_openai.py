"""The Serve app through real OpenAI clients: the `openai` package (completions, chat, streaming,
log-probs), lm-evaluation-harness's `local-completions` model on a generated multiple-choice task
(the same choices as the offline evaluator), and a mixed load over more models than a replica holds.

The served run is test_serve_app's (the tiny model as base, a shifted copy as `ft`, a LoRA adapter
as `ft+oracle`; one model per replica, so alternating models evicts).
"""

from __future__ import annotations

import concurrent.futures as cf
import json

import httpx
import pytest

from pipeline.evaluate import scoring as offline_scoring
from pipeline.evaluate.results import condition_rows
from pipeline.models import load_tokenizer
from test_serve_app import ITEMS_FULL, _local_greedy, _offline_scores, client, run_cfg  # noqa: F401 - fixtures

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def oai(client, run_cfg):
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{run_cfg.serve.port}/v1", api_key="none", max_retries=0, timeout=120)


def test_openai_client_completion_chat_and_models(oai, run_cfg):
    out = oai.completions.create(model="ft", prompt="Hello", max_tokens=6, temperature=0)
    assert out.choices[0].text == _local_greedy(run_cfg, "ft", "Hello", 6)
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (5, 6, 11)
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    chat = oai.chat.completions.create(model="ft", messages=messages, max_completion_tokens=5, temperature=0,
                                       extra_body={"some_vendor_field": 1})  # unknown fields are ignored
    as_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = load_tokenizer(run_cfg.model).apply_chat_template(as_system, tokenize=False, add_generation_prompt=True)
    assert chat.choices[0].message.content == _local_greedy(run_cfg, "ft", prompt, 5, chat=True)
    assert chat.usage.completion_tokens == 5
    assert oai.models.retrieve("ft+oracle").id == "ft+oracle"
    assert [m.id for m in oai.models.list().data] == ["base", "ft", "ft+oracle"]
    from openai import NotFoundError

    with pytest.raises(NotFoundError):
        oai.models.retrieve("ft+global")


def test_streamed_chat_comes_token_by_token_and_ends_with_usage(oai, run_cfg):
    stream = oai.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                         temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    tok = load_tokenizer(run_cfg.model)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    whole = _local_greedy(run_cfg, "base", prompt, 6, chat=True)
    assert "".join(pieces) == whole
    assert len(pieces) == len(tok(whole, add_special_tokens=False)["input_ids"])  # one chunk per token
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])


def test_streamed_completion_stops_at_a_stop_string(client):
    body = {"model": "base", "prompt": "Hello", "max_tokens": 30, "temperature": 0, "stop": ["ooo"], "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(e["choices"][0]["text"] for e in events) == ""
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_n_and_seed_give_distinct_reproducible_samples(oai):
    def sample():
        out = oai.completions.create(model="base", prompt=["Hello", "Bye"], max_tokens=8, temperature=1.0, n=2, seed=5)
        return [c.text for c in sorted(out.choices, key=lambda c: c.index)], out.usage

    texts, usage = sample()
    assert len(texts) == 4 and texts[0] != texts[1]
    assert sample()[0] == texts
    assert (usage.prompt_tokens, usage.completion_tokens) == (5 + 3, 4 * 8)  # each prompt counted once
    stream = oai.completions.create(model="base", prompt=["Hello", "Bye"], max_tokens=8, temperature=1.0, n=2, seed=5,
                                    stream=True)
    streamed = ["", "", "", ""]
    for chunk in stream:
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert streamed == texts


def test_completion_logprobs_and_echo_in_openais_legacy_shape(oai):
    out = oai.completions.create(model="base", prompt="Hello", max_tokens=3, temperature=0, logprobs=2)
    lp = out.choices[0].logprobs
    assert lp.tokens == list(out.choices[0].text) and len(lp.token_logprobs) == 3
    assert lp.text_offset == [0, 1, 2]
    assert all(max(top.values()) == value for top, value in zip(lp.top_logprobs, lp.token_logprobs))
    echo = oai.completions.create(model="base", prompt="Hello", max_tokens=0, echo=True, logprobs=1)
    lp = echo.choices[0].logprobs
    assert echo.choices[0].text == "Hello" and lp.tokens == list("Hello")
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None and all(v < 0 for v in lp.token_logprobs[1:])
    assert echo.usage.completion_tokens == 0


def test_chat_logprobs_in_openais_chat_shape(oai):
    out = oai.chat.completions.create(model="ft", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                      temperature=0, logprobs=True, top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert "".join(e.token for e in content) == out.choices[0].message.content
    for e in content:
        assert e.bytes == list(e.token.encode()) and len(e.top_logprobs) == 2
        assert e.top_logprobs[0].logprob == pytest.approx(e.logprob)  # greedy picks the most likely token


def test_lm_eval_local_completions_chooses_as_the_offline_evaluator(run_cfg, client, tmp_path, monkeypatch):
    """lm-evaluation-harness scores a generated multiple-choice task through the server, fully
    offline: the task is a local JSONL file, the tokenizer is the server's (/tokenize)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    items = [{"prompt": it["prompt"], "choices": it["choices"], "answer_index": it["answer_index"]} for it in ITEMS_FULL]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    (tmp_path / "kl_mc.yaml").write_text(
        "task: kl_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'items.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{prompt}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: answer_index\ntarget_delimiter: ' '\n"
        "metric_list:\n  - metric: acc\n")
    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={"model": "ft", "base_url": f"http://127.0.0.1:{run_cfg.serve.port}/v1/completions",
                    "tokenizer_backend": "remote", "tokenized_requests": True, "max_retries": 1},
        tasks=["kl_mc"], task_manager=TaskManager(include_path=str(tmp_path)), log_samples=True)
    samples = sorted(out["samples"]["kl_mc"], key=lambda s: s["doc_id"])
    offline = _offline_scores(run_cfg, "ft", [{**it, "item_id": str(k)} for k, it in enumerate(items)])
    assert len(samples) == len(offline) == 4
    for sample, want in zip(samples, offline):
        served = [resp[0][0] for resp in sample["resps"]]
        assert served == pytest.approx(want["choice_logprobs"], abs=1e-4)
        assert max(range(len(served)), key=served.__getitem__) == offline_scoring.predictions(
            want["choice_logprobs"], want["choice_num_chars"])[0]


def test_split_statistics_equal_results_json(client, run_cfg):
    body = client.post("/v1/evaluate/split", json={"condition": "ft", "world": "reversals", "split": "reversal"}).json()
    stored = [it for it in ITEMS_FULL if it["split"] == "reversal"]
    scores = [{**row, "item_id": row["item_id"]} for row in body["items"]]
    (row,) = [r for r in condition_rows("ft", stored, scores) if r["split"] == "reversal" and r["subtask"] == "*"]
    assert (body["accuracy"], body["accuracy_se"], body["acc_norm"], body["acc_norm_se"], body["n"]) == (
        row["acc"], row["acc_stderr"], row["acc_norm"], row["acc_norm_stderr"], row["n"])
    offline = _offline_scores(run_cfg, "ft", stored)
    (want,) = [r for r in condition_rows("ft", stored, offline) if r["split"] == "reversal" and r["subtask"] == "*"]
    assert body["accuracy"] == want["acc"] and body["accuracy_se"] == pytest.approx(want["acc_stderr"])


def test_mixed_load_over_more_models_than_a_replica_holds_has_no_errors(client, run_cfg):
    """Completions, chats, streams and evaluations over three models on replicas that hold one:
    every answer is right (evictions wait for the requests using a model)."""
    expected = {m: _local_greedy(run_cfg, m, "Hello", 4) for m in ("base", "ft", "ft+oracle")}
    chat_prompt = load_tokenizer(run_cfg.model).apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    expected_chat = {m: _local_greedy(run_cfg, m, chat_prompt, 3, chat=True) for m in expected}
    item = {"prompt": ITEMS_FULL[0]["prompt"], "choices": ITEMS_FULL[0]["choices"]}
    before = client.get("/v1/stats").json()["generator"]["loads"]

    def one(k: int) -> str | None:
        model = ("base", "ft", "ft+oracle")[k % 3]
        kind = k % 4
        with httpx.Client(base_url=str(client.base_url), timeout=120) as http:
            if kind == 0:
                resp = http.post("/v1/completions", json={"model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0})
                text = resp.json()["choices"][0]["text"] if resp.status_code == 200 else None
            elif kind == 1:
                with http.stream("POST", "/v1/completions", json={"model": model, "prompt": "Hello", "max_tokens": 4,
                                                                  "temperature": 0, "stream": True}) as resp:
                    lines = [ln for ln in resp.iter_lines() if ln.startswith("data: {")]
                text = "".join(json.loads(ln[6:])["choices"][0]["text"] for ln in lines) if resp.status_code == 200 else None
            elif kind == 2:
                resp = http.post("/v1/chat/completions", json={"model": model, "max_tokens": 3, "temperature": 0,
                                                               "messages": [{"role": "user", "content": "Hi"}]})
                text = resp.json()["choices"][0]["message"]["content"] if resp.status_code == 200 else None
                return None if text == expected_chat[model] else f"{model} chat: {text!r} != {expected_chat[model]!r}"
            else:
                condition = {"base": "icl"}.get(model, model)
                resp = http.post("/v1/evaluate", json={"condition": condition, "items": [item]})
                return None if resp.status_code == 200 and len(resp.json()["results"]) == 1 else resp.text
        return None if text == expected[model] else f"{model}: {text!r} != {expected[model]!r}"

    with cf.ThreadPoolExecutor(6) as pool:
        errors = [e for e in pool.map(one, range(24)) if e is not None]
    assert errors == []
    after = client.get("/v1/stats").json()["generator"]["loads"]
    assert sum(after.values()) - sum(before.values()) >= 2  # models were swapped in and out under load
