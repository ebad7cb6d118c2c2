"""API keys on a running server: every route but /healthz needs one; config and environment keys
both work, with the openai client too (streaming included)."""

from __future__ import annotations

import httpx
import pytest
from ports import free_port
from test_serve_app import run_cfg  # noqa: F401 - fixture

from pipeline.config import RunConfig

pytestmark = pytest.mark.filterwarnings("ignore")

ROUTES = [("GET", "/v1/models"), ("GET", "/v1/models/base"), ("POST", "/v1/completions"),
          ("POST", "/v1/chat/completions"), ("POST", "/v1/evaluate"), ("POST", "/v1/evaluate/split"),
          ("GET", "/v1/stats"), ("POST", "/tokenize"), ("POST", "/detokenize"), ("GET", "/tokenizer_info"),
          ("GET", "/v1/nothing")]


@pytest.fixture(scope="module")
def keyed(ray_cluster, run_cfg: RunConfig):
    from ray import serve

    from serve.app import start

    cfg = run_cfg.model_copy(update={"serve": run_cfg.serve.model_copy(update={"port": free_port(),
                                                                                "api_keys": ["cfg-key"]})})
    mp = pytest.MonkeyPatch()
    mp.setenv("KNOWLEDGE_LAB_API_KEYS", "env-key-1,env-key-2")
    try:
        start(cfg)  # keys are read here, where the app is built
    finally:
        mp.undo()
    yield f"http://127.0.0.1:{cfg.serve.port}"
    serve.shutdown()


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_but_healthz_needs_a_key(keyed, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "cfg-key"}):
        resp = httpx.request(method, keyed + path, json={}, headers=headers, timeout=60)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.json()["error"]["code"] == "invalid_api_key"


def test_healthz_is_open_and_keys_from_config_and_environment_work(keyed):
    assert httpx.get(keyed + "/healthz", timeout=60).json()["status"] == "ok"
    for key in ("cfg-key", "env-key-1", "env-key-2"):
        resp = httpx.get(keyed + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert resp.status_code == 200 and [m["id"] for m in resp.json()["data"]] == ["base", "ft", "ft+oracle"]


def test_openai_client_with_a_key(keyed):
    from openai import AuthenticationError, OpenAI

    oai = OpenAI(base_url=keyed + "/v1", api_key="env-key-2", max_retries=0, timeout=120)
    assert oai.completions.create(model="base", prompt="Hello", max_tokens=2, temperature=0).usage.completion_tokens == 2
    pieces = [c.choices[0].text for c in oai.completions.create(model="base", prompt="Hello", max_tokens=3,
                                                                 temperature=0, stream=True) if c.choices]
    assert "".join(pieces) == "ooo"
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=keyed + "/v1", api_key="nope", max_retries=0).models.list()
