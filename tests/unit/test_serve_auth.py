"""API keys (no Ray): which keys are accepted, OpenAI's 401 shape, /healthz open, the loud warning,
and the engine check that fails fast."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve.auth import ENV_VAR, ApiKeyAuth, configured_keys, digest, is_authorized, warn_if_exposed


@pytest.fixture
def http() -> TestClient:
    app = FastAPI()
    app.add_middleware(ApiKeyAuth)
    app.state.api_key_digests = (digest("sk-one"), digest("sk-two"))

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def completions() -> dict:
        return {"ok": True}

    return TestClient(app)


def test_keys_come_from_the_config_and_the_environment():
    assert configured_keys(["a"], {ENV_VAR: " b, ,c "}) == ["a", "b", "c"]
    assert configured_keys([], {}) == []
    assert configured_keys(["", " "], {ENV_VAR: ""}) == []


@pytest.mark.parametrize("header,ok", [
    ("Bearer sk-one", True), ("bearer sk-two", True), ("Bearer sk-on", False), ("Bearer sk-one2", False),
    ("sk-one", False), ("Basic sk-one", False), ("Bearer ", False), (None, False),
])
def test_only_a_bearer_key_from_the_list_is_accepted(header, ok):
    assert is_authorized(header, (digest("sk-one"), digest("sk-two"))) is ok


def test_missing_and_wrong_keys_get_openais_401(http):
    missing = http.post("/v1/completions")
    wrong = http.post("/v1/completions", headers={"Authorization": "Bearer nope"})
    for resp in (missing, wrong):
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        err = resp.json()["error"]
        assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "invalid_api_key", None)
    assert "didn't provide an API key" in missing.json()["error"]["message"]
    assert "Incorrect API key" in wrong.json()["error"]["message"]
    assert http.post("/v1/completions", headers={"Authorization": "Bearer sk-two"}).json() == {"ok": True}


def test_healthz_needs_no_key(http):
    assert http.get("/healthz").json() == {"status": "ok"}


def test_no_digests_means_no_authentication(http):
    http.app.state.api_key_digests = ()
    assert http.post("/v1/completions").status_code == 200


def test_binding_beyond_loopback_without_a_key_warns_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="serve.auth"):
        warn_if_exposed("127.0.0.1", [])
        warn_if_exposed("0.0.0.0", ["k"])
        assert caplog.records == []
        warn_if_exposed("0.0.0.0", [])
    (record,) = caplog.records
    assert "0.0.0.0" in record.getMessage() and "no API key" in record.getMessage() and ENV_VAR in record.getMessage()


def test_vllm_engine_fails_fast_naming_what_is_missing(monkeypatch):
    import importlib.util

    import torch

    from serve.engines import EngineError, require_engine

    require_engine("hf")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngineError) as err:
        require_engine("vllm")
    assert str(err.value).startswith("serve.engine: 'vllm' needs the vllm package")
    assert "a CUDA GPU" in str(err.value) and "serve.engine=hf" in str(err.value)
