"""Start or join Ray for the CLI; the only place that calls ray.init()."""

from __future__ import annotations

import os
from contextlib import contextmanager

from pipeline.config import RayConfig

#: Environment every Ray worker needs (DeepSpeed must not probe for CUDA on CPU machines).
WORKER_ENV_KEYS = ("KNOWLEDGE_LAB_CACHE", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR", "HF_HOME")


@contextmanager
def ray_session(cfg: RayConfig):
    import ray

    if ray.is_initialized():
        yield
        return
    env = {k: os.environ[k] for k in WORKER_ENV_KEYS if k in os.environ}
    # Under `ray job submit` RAY_ADDRESS names the job's own cluster exactly; prefer it to
    # "auto", which fails when a machine runs more than one Ray cluster.
    env_address = os.environ.get("RAY_ADDRESS")
    address = env_address if cfg.address in (None, "auto") and env_address else cfg.address
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
    else:
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, runtime_env={"env_vars": env})
    try:
        yield
    finally:
        ray.shutdown()
