"""Start or join Ray for the CLI; the only place that calls ray.init()."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from pipeline.config import ConfigError, RayConfig

#: Environment every Ray worker needs (DeepSpeed must not probe for CUDA on CPU machines).
WORKER_ENV_KEYS = ("KNOWLEDGE_LAB_CACHE", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR", "HF_HOME")
#: Quieter libraries, on the driver and in every worker, unless the user's environment says otherwise:
#: Ray Data's INFO lines (the stages report their own progress) and per-load progress bars.
QUIET_ENV = {"RAY_DATA_LOG_LEVEL": "WARNING", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
#: Ray Train's controller waits 2 s between polls of its workers, which adds seconds to the start and
#: the end of every fit; a fit of a small model takes seconds, and a poll costs next to nothing.
#: Ray Train hands this from the driver to its controller itself.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


@contextmanager
def ray_session(cfg: RayConfig, run_dir=None):
    """Start or join Ray; with `run_dir`, first check that every node can reach the run's storage."""
    import ray

    if ray.is_initialized():
        if run_dir is not None:
            check_run_storage_reachable(run_dir)
        yield
        return
    for key, value in {**QUIET_ENV, **TRAIN_ENV}.items():
        os.environ.setdefault(key, value)
    env = {k: os.environ[k] for k in (*WORKER_ENV_KEYS, *QUIET_ENV) if k in os.environ}
    # Under `ray job submit` RAY_ADDRESS names the job's own cluster exactly; prefer it to
    # "auto", which fails when a machine runs more than one Ray cluster.
    env_address = os.environ.get("RAY_ADDRESS")
    address = env_address if cfg.address in (None, "auto") and env_address else cfg.address
    # every worker quiets the libraries' INFO chatter, so the worker lines the driver shows are ours
    runtime_env = {"env_vars": env, "worker_process_setup_hook": "pipeline.logs.worker_setup"}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, runtime_env=runtime_env, logging_level=logging.WARNING)
    try:
        if run_dir is not None:
            check_run_storage_reachable(run_dir)
        yield
    finally:
        ray.shutdown()


class StorageUnreachable(ConfigError):
    """The run folder is on a disk that Ray nodes doing the work cannot see."""


def _sees(path: str, token: str) -> bool:
    from pathlib import Path

    marker = Path(path)
    return marker.is_file() and marker.read_text() == token


#: How long the storage probe waits for a task on every node (a node may still be starting).
PROBE_TIMEOUT_S = 120


def check_run_storage_reachable(run_dir) -> None:
    """Fail before any stage runs when `output_dir` is a local folder and the work may run on
    nodes that cannot see it: a probe task on every other node looks for a marker file the
    driver wrote. A driver whose node offers no CPU (a cluster head) always needs shared storage."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pipeline import storage

    if storage.is_remote(run_dir):
        return
    here = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    others = [n for n in nodes if n["NodeID"] != here]
    hint = (f"output_dir: {run_dir} is a folder on the driver's disk; set output_dir to a location every Ray node "
            "can reach: a URI such as s3://BUCKET/runs or gs://BUCKET/runs, or file:///PATH on a shared mount")
    if not others:
        mine = next((n for n in nodes if n["NodeID"] == here), {})
        if mine and not mine.get("Resources", {}).get("CPU"):
            raise StorageUnreachable(f"{hint} (this node runs no work: CPU 0, so every task runs on other nodes)")
        return
    token = uuid.uuid4().hex
    marker = run_dir / f".node-probe-{token}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0)(_sees)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker), token)
                for n in others]
        seen = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    finally:
        marker.unlink(missing_ok=True)
    blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(others, seen) if not ok]
    if blind:
        raise StorageUnreachable(f"{hint} ({len(blind)} of {len(others)} other node(s) cannot see it: {', '.join(blind[:4])})")


class GpusUnavailable(RuntimeError):
    """A stage asked for GPUs and the cluster did not get them in time."""


def wait_for_gpus(count: int, what: str, timeout_s: float, poll_s: float = 5.0) -> float:
    """Make sure the cluster has `count` GPUs: ask the autoscaler for them (a cluster whose GPU
    workers scale from zero starts them) and wait up to `timeout_s`; then fail naming `what` and
    `ray.gpu_wait_s`. Returns the cluster's GPUs. Never a silent fall-back to CPU."""
    import time

    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus >= count:
        return gpus
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1}] * count)
    deadline = time.monotonic() + timeout_s
    while gpus < count and time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        gpus = ray.cluster_resources().get("GPU", 0)
    if gpus < count:
        raise GpusUnavailable(f"{what} asks for {count} GPU(s); the Ray cluster has {gpus:g} after waiting {timeout_s:g} s "
                              "for the autoscaler (ray.gpu_wait_s); start GPU workers, raise ray.gpu_wait_s, or run on CPU "
                              "(augment.device=cpu, train.use_gpu=false, evaluate.use_gpu=false)")
    return gpus
