"""Start or join Ray for the CLI; the only place that calls ray.init()."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from pipeline.config import RayConfig

#: Environment every Ray worker needs (DeepSpeed must not probe for CUDA on CPU machines).
WORKER_ENV_KEYS = ("KNOWLEDGE_LAB_CACHE", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR", "HF_HOME")
#: Quieter libraries, on the driver and in every worker, unless the user's environment says otherwise:
#: Ray Data's INFO lines (the stages report their own progress) and per-load progress bars.
QUIET_ENV = {"RAY_DATA_LOG_LEVEL": "WARNING", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@contextmanager
def ray_session(cfg: RayConfig):
    import ray

    if ray.is_initialized():
        yield
        return
    for key, value in QUIET_ENV.items():
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
        yield
    finally:
        ray.shutdown()
