"""A real two-node cluster on one machine, whose worker node cannot see the driver's disk.

The head (`--num-cpus=0`, like cluster.yaml's) runs the driver; the only node with CPUs is
started in its own mount namespace with empty tmpfs folders over the driver's run folder, model
cache and Ray temp dir, so everything a worker needs must travel through run storage: moto's S3
server on 127.0.0.1. `ray job submit` runs the smoke config with every condition into the bucket;
`pipeline serve` then answers a completion from a tuned model the replica fetched from the bucket.
The same job with a local output_dir fails at start-up, naming the key. Token authentication is
on, as Ray 2.60 sets it up: the token is in RAY_AUTH_TOKEN for every `ray` command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from ports import free_port

pytestmark = pytest.mark.multinode
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONDITIONS = ["ft", "ft+local", "ft+global", "ft+local+global", "ft+oracle"]


def _mount_namespaces_allowed() -> str | None:
    """Why this machine cannot run the test, or None."""
    if shutil.which("unshare") is None:
        return "no `unshare` command"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs none $d && umount $d && rmdir $d"],
                           capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"mount namespaces are not allowed here: {probe.stderr.strip()[:200]}"


def _active_nodes(env: dict, gcs: int) -> int:
    out = subprocess.run([str(BIN / "ray"), "status", f"--address=127.0.0.1:{gcs}"], env=env, capture_output=True,
                         text=True, timeout=60).stdout
    active = out.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out else ""
    return len(re.findall(r"^\s*\d+ node_[0-9a-f]+", active, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    why = _mount_namespaces_allowed()
    if why:
        pytest.skip(f"two-node test needs a private mount namespace for the worker node: {why}")
    base = tmp_path_factory.mktemp("multinode")
    runs, cache = base / "runs", base / "cache"  # the driver's disk: hidden from the worker node
    runs.mkdir()
    cache.mkdir()
    head_tmp = tempfile.mkdtemp(prefix="kl-h-", dir="/tmp")  # short: Ray's socket paths
    worker_tmp = tempfile.mkdtemp(prefix="kl-w-", dir="/tmp")
    token = secrets.token_hex(16)
    env = {**os.environ, **s3_server.env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "DS_ACCELERATOR": "cpu",
           "KNOWLEDGE_LAB_CACHE": str(cache), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    head_ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                  f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    worker_ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                    f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    logs = {name: open(base / f"{name}.log", "w") for name in ("head", "worker")}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=0", "--num-gpus=0", "--node-ip-address=127.0.0.1",
         f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         *head_ports, f"--temp-dir={head_tmp}", "--disable-usage-stats"],
        env=env, stdout=logs["head"], stderr=subprocess.STDOUT, start_new_session=True)
    masked = " && ".join(f"mount -t tmpfs none {p}" for p in (runs, cache, head_tmp))
    worker_cmd = " ".join([str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}", "--block", "--num-cpus=2",
                           "--num-gpus=0", "--node-ip-address=127.0.0.1", *worker_ports, f"--temp-dir={worker_tmp}",
                           "--disable-usage-stats"])
    worker = None
    try:
        deadline = time.time() + 180
        while _active_nodes(env, gcs) < 1:  # the head node is registered: the worker node can join
            assert head.poll() is None and time.time() < deadline, (base / "head.log").read_text()[-3000:]
            time.sleep(1)
        worker = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", f"{masked} && exec {worker_cmd}"],
                                  env=env, stdout=logs["worker"], stderr=subprocess.STDOUT, start_new_session=True)
        while _active_nodes(env, gcs) < 2:
            assert worker.poll() is None and time.time() < deadline, (base / "worker.log").read_text()[-3000:]
            time.sleep(2)
        yield type("Cluster", (), {"env": env, "dash": dash, "gcs": gcs, "runs": runs, "cache": cache, "base": base})
    finally:
        running = [p for p in (worker, head) if p is not None and p.poll() is None]
        for proc in running:  # SIGTERM to every process of both nodes at once
            os.killpg(proc.pid, signal.SIGTERM)
        grace = time.time() + 5  # a node's graceful stop takes half a minute: nothing here needs it
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, grace - time.time()))
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for f in logs.values():
            f.close()
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)


def submit(cluster, *args: str, wait: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`ray job submit` of `python -m pipeline ...`, retried while the job agent is not up yet."""
    cmd = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{cluster.dash}", "--working-dir", str(ROOT),
           *([] if wait else ["--no-wait"]), "--", "python", "-m", "pipeline", *args]
    deadline = time.time() + 180
    while True:
        proc = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in proc.stdout + proc.stderr or time.time() > deadline:
            return proc
        time.sleep(3)


def _bucket(s3_server):
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3_server.port}", scheme="http", region="us-east-1",
                             access_key="testing", secret_key="testing")


def bucket_files(s3_server, bucket_uri: str) -> dict[str, int]:
    import pyarrow.fs as pafs

    root = bucket_uri.removeprefix("s3://")
    infos = _bucket(s3_server).get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path[len(root) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}


def bucket_json(s3_server, uri: str):
    with _bucket(s3_server).open_input_stream(uri.removeprefix("s3://")) as f:
        return json.loads(f.read())


#: What the smoke config must produce: items per (world, split), the same under every condition.
SMOKE_SPLITS = {("reversals", "rephrase"): 6, ("reversals", "reversal"): 6, ("syllogisms", "syllogism"): 6,
                ("families", "reversal"): 6, ("families", "composition"): 6}


def check_smoke_results(results: dict, conditions: list[str]) -> None:
    """Every condition has a number for every split of the smoke worlds, over the pinned items."""
    assert results["conditions"] == conditions
    for condition in conditions:
        rows = {(r["world"], r["split"]): r for r in results["rows"] if r["condition"] == condition and r["subtask"] == "*"}
        assert {k: rows[k]["n"] for k in SMOKE_SPLITS} == SMOKE_SPLITS, condition
        assert all(0.0 <= rows[k]["acc"] <= 1.0 and rows[k]["acc_stderr"] is not None for k in SMOKE_SPLITS), condition


def test_smoke_job_on_two_nodes_stores_everything_in_the_bucket_and_serves_a_tuned_model(cluster, s3_bucket, s3_server):
    out = f"{s3_bucket}/runs"
    proc = submit(cluster, "run", "configs/smoke.yaml", "--set", f"output_dir={out}")
    assert proc.returncode == 0 and "succeeded" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
    # the job's log: each fit's progress line (steps, rate) once, no Ray Train State API warnings;
    # a condition whose augmentation added nothing trains on ft's examples and shares ft's fit
    trained = bucket_json(s3_server, f"{out}/smoke/manifests/train.json")["summary"]
    fits = [c for c in CONDITIONS if "same_fit_as" not in trained[c]]
    assert "ft" in fits and "ft+oracle" in fits
    assert all(trained[c]["same_fit_as"] == "ft" and trained[c]["augmented_docs"] == 0 for c in CONDITIONS if c not in fits)
    for condition in CONDITIONS:
        fit = condition.replace("+", "_")
        lines = sum(f"train {fit}: 6/6 (100%)" in line and "steps/s" in line for line in proc.stdout.splitlines())
        assert lines == (condition in fits), fit
    assert "Failed to query Ray Train Controller" not in proc.stdout
    assert "[pipeline] estimate for this machine" not in proc.stdout  # a job's work runs on other machines
    data = bucket_json(s3_server, f"{out}/smoke/manifests/data.json")["summary"]
    assert (data["docs"], data["items"]) == (22, 30)
    check_smoke_results(bucket_json(s3_server, f"{out}/smoke/results.json"), ["base", "icl", *CONDITIONS])
    files = bucket_files(s3_server, s3_bucket)
    for stage in ("data", "augment", "train", "evaluate", "report"):
        assert f"runs/smoke/manifests/{stage}.json" in files
    for condition in CONDITIONS:
        assert f"runs/smoke/models/{condition}/CONTENTS.json" in files
        assert f"runs/smoke/models/{condition}/model.safetensors" in files
    assert "runs/smoke/results.json" in files and "runs/smoke/report.md" in files
    assert not [f for f in files if f.startswith("runs/smoke/train/")]  # checkpoints removed after export
    assert not any(cluster.runs.iterdir())  # nothing went to the driver's local disk

    port = free_port()
    serving = submit(cluster, "serve", "configs/smoke.yaml", "--set", f"output_dir={out}", "--set", f"serve.port={port}",
                     wait=False, timeout=300)
    assert serving.returncode == 0, serving.stdout[-3000:] + serving.stderr[-2000:]
    job_id = re.search(r"raysubmit_\w+", serving.stdout).group(0)
    try:
        deadline = time.time() + 420
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
                    served = [m["id"] for m in json.load(r)["data"]]
                if "ft" in served:
                    break
            except OSError:
                pass
            assert time.time() < deadline, subprocess.run(
                [str(BIN / "ray"), "job", "logs", job_id, "--address", f"http://127.0.0.1:{cluster.dash}"],
                env=cluster.env, capture_output=True, text=True, timeout=120).stdout[-4000:]
            time.sleep(3)
        assert set(CONDITIONS) <= set(served)
        body = json.dumps({"model": "ft", "prompt": "The glon are", "max_tokens": 4, "temperature": 0}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as r:
            answer = json.load(r)
        assert answer["model"] == "ft" and answer["choices"][0]["text"] != "" and answer["usage"]["completion_tokens"] >= 1
    finally:
        subprocess.run([str(BIN / "ray"), "job", "stop", job_id, "--address", f"http://127.0.0.1:{cluster.dash}"],
                       env=cluster.env, capture_output=True, text=True, timeout=180)


def test_the_job_api_refuses_a_wrong_token(cluster):
    bad = subprocess.run([str(BIN / "ray"), "job", "list", "--address", f"http://127.0.0.1:{cluster.dash}"],
                         env={**cluster.env, "RAY_AUTH_TOKEN": "wrong" * 6}, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    good = subprocess.run([str(BIN / "ray"), "job", "list", "--address", f"http://127.0.0.1:{cluster.dash}"],
                          env=cluster.env, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr[-2000:]


def test_a_local_output_dir_fails_fast_naming_the_key(cluster):
    proc = submit(cluster, "run", "configs/smoke.yaml", "--set", f"output_dir={cluster.runs}", timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "failed" in text
    assert f"output_dir: {cluster.runs}/smoke is a folder on the driver's disk" in text and "s3://BUCKET/runs" in text
    assert "[data] running" not in text  # no stage ran
