"""The whole experiment through the CLI on the smoke config (tiny model), in-process and as a
Ray job on a `ray start` cluster bound to 127.0.0.1 with token authentication."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_job_api(port: int, token: str, timeout: float, head, log: Path) -> None:
    """The job API answers a few seconds after `ray start` returns (longer on a busy machine)."""
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/version", headers={"Authorization": f"Bearer {token}"})
    while True:
        if head.poll() is not None:
            raise AssertionError(f"`ray start --head` exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answered (the job CLI handles the details)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.time() > deadline:
                raise AssertionError(f"the Ray job API on 127.0.0.1:{port} did not come up in {timeout:.0f} s") from None
            time.sleep(2)


def _check_run(run: Path, conditions: list[str]) -> dict:
    results = json.loads((run / "results.json").read_text())
    report = (run / "report.md").read_text()
    for cond in conditions:
        assert cond in report, f"{cond} missing from report.md"
    assert sorted(p.name for p in (run / "manifests").iterdir()) == sorted(
        f"{s}.json" for s in ["data", "augment", "train", "evaluate", "report"])
    assert list((run / "plots").glob("*.png")), "no plots written"
    return results


def test_smoke_run_through_the_cli_and_rerun_skips(tmp_path, ray_cluster):
    from pipeline.cli import main

    args = ["run", str(ROOT / "configs" / "smoke.yaml"), "--set", f"output_dir={tmp_path}"]
    assert main(args) == 0
    run = tmp_path / "smoke"
    cfg_conditions = __import__("yaml").safe_load((run / "config.yaml").read_text())["conditions"]
    _check_run(run, cfg_conditions)
    stamps = {p.name: p.stat().st_mtime_ns for p in (run / "manifests").iterdir()}
    assert main(args) == 0  # everything finished: every stage is skipped
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (run / "manifests").iterdir()}
    # a different config for the same run folder is refused, naming the key
    assert main(args + ["--set", "seed=99"]) == 2


def test_ray_job_submit_on_a_local_cluster(tmp_path):
    token = secrets.token_hex(16)
    # Every port of our own: another Ray cluster on this machine (the session's fixture) already
    # holds the defaults, and a job agent that cannot bind its port leaves the job API with no agent.
    gcs, dash, agent, metrics = (_free_port() for _ in range(4))
    # a short temp dir: Ray's Unix socket paths must stay under 108 characters
    ray_tmp = tempfile.mkdtemp(prefix="kl-ray-", dir="/tmp")
    log = open(tmp_path / "ray-start.log", "w")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DS_ACCELERATOR": "cpu"}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}", "--num-cpus=2",
         f"--temp-dir={ray_tmp}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out = tmp_path / "runs"
        submit = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
                  "--working-dir", str(ROOT), "--", "python", "-m", "pipeline", "run", "configs/smoke.yaml",
                  "--set", f"output_dir={out}", "--set", "conditions=[base,icl,ft]"]  # the cluster path, not every condition again
        _wait_for_job_api(dash, token, timeout=300, head=head, log=tmp_path / "ray-start.log")
        deadline = time.time() + 180
        while True:  # the job agent registers a little after the API answers
            proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=1200)
            if "No available agent" not in proc.stdout + proc.stderr or time.time() > deadline:
                break
            time.sleep(3)
        agent_log = next(Path(ray_tmp).glob("session_*/logs/dashboard_agent.log"), None)
        assert proc.returncode == 0 and "succeeded" in proc.stdout, (
            proc.stdout[-3000:] + proc.stderr[-3000:] + (agent_log.read_text()[-3000:] if agent_log else ""))
        _check_run(out / "smoke", __import__("yaml").safe_load((out / "smoke" / "config.yaml").read_text())["conditions"])
        # the workers' progress (steps done, rate) reaches the job's log, each line once, and Ray
        # Train's placement-group cleaner does not fill it with State API warnings
        progress = [line for line in proc.stdout.splitlines() if "train ft: 6/6 (100%)" in line and "steps/s" in line]
        assert len(progress) == 1, proc.stdout[-3000:]
        assert "Failed to query Ray Train Controller" not in proc.stdout
        # without the token the cluster refuses the job API
        bad = subprocess.run([str(BIN / "ray"), "job", "list", "--address", f"http://127.0.0.1:{dash}"],
                             env={**env, "RAY_AUTH_TOKEN": "wrong" * 6}, capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` drains and stops its processes
            head.wait(timeout=90)
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
