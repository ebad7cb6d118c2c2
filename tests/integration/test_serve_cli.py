"""`python -m pipeline serve CONFIG`: serves a finished run on the configured loopback port until
Ctrl-C, then stops cleanly; a folder that is not a finished run is refused before Ray starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from ports import free_port

from pipeline.records import Doc, Item, write_records

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path, tiny_model_dir, port: int) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(
        f"name: cli\noutput_dir: {tmp_path / 'runs'}\nmodel: {{ref: {tiny_model_dir}}}\n"
        f"serve: {{port: {port}, generation: {{num_cpus: 0.5}}, evaluator: {{num_cpus: 0.5}}, ingress: {{num_cpus: 0.1}}}}\n"
        "ray: {num_cpus: 2}\n"
    )
    return path


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "RAY_ADDRESS": ""}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_serve_refuses_a_run_that_has_not_finished(tmp_path, tiny_model_dir):
    proc = _cli("serve", str(_config(tmp_path, tiny_model_dir, free_port())))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "not a finished run (no data/items.parquet)" in out and str(tmp_path / "runs" / "cli") in out


def test_serve_command_serves_until_interrupted(tmp_path, tiny_model_dir):
    port = free_port()
    cfg = _config(tmp_path, tiny_model_dir, port)
    run = tmp_path / "runs" / "cli"
    write_records(run / "data" / "docs.parquet", Doc,
                  [{"doc_id": "d0", "world": "w", "text": "Femp are more dangerous than glon.", "origin": "train"}])
    write_records(run / "data" / "items.parquet", Item, [{
        "item_id": "i0", "world": "w", "split": "reversal", "subtask": "c", "prompt": "Glon are",
        "choices": ["less dangerous than femp.", "more dangerous than femp."], "answer_index": 0}])
    proc = _cli("serve", str(cfg))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        # ready when the CLI says so: a new local Ray cluster + Serve app, slow on a busy machine
        deadline = time.time() + 420
        while time.time() < deadline and proc.poll() is None and not any(l.startswith("serving ") for l in lines):
            time.sleep(1)
        assert any(l.startswith("serving ") for l in lines), "".join(lines)[-5000:]
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert health.status_code == 200 and health.json()["models"] == ["base"]
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/completions",
                          json={"model": "base", "prompt": "Hi", "max_tokens": 3, "temperature": 0}, timeout=120)
        assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert f"on http://127.0.0.1:{port}" in out
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
