"""Shared fixtures: the tiny offline model, a run folder, one local Ray cluster per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ports import free_port

from pipeline.ray_session import TRAIN_ENV

os.environ.setdefault("DS_ACCELERATOR", "cpu")
# what `pipeline.ray_session` sets for the CLI, for the tests that call a fit on the shared cluster
for _key, _value in TRAIN_ENV.items():
    os.environ.setdefault(_key, _value)
# Serve gives a new proxy actor 5 s to report ready and then kills it; on a 2-core machine busy
# with the rest of the suite its process can take longer than that just to start.
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CELEBRITIES = SHARED / "data" / "reversal_curse"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from pipeline.models import resolve

    return Path(resolve("tiny-random"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) shared by every integration test of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}})
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (a port of its own), for run storage on an object store.
    Yields its endpoint and the AWS environment that points pyarrow (and every process started
    with it) at the server."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}") from None
            time.sleep(0.3)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        yield type("S3Server", (), {"endpoint": endpoint, "port": port, "env": env})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the S3 server, with the AWS environment set; yields its s3:// URI."""
    import uuid

    import pyarrow.fs as pafs

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    bucket = f"kl-{uuid.uuid4().hex[:12]}"
    pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3_server.port}", scheme="http", region="us-east-1",
                      access_key="testing", secret_key="testing", allow_bucket_creation=True).create_dir(bucket)
    return f"s3://{bucket}"
