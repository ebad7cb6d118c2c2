"""Shared fixtures: the tiny offline model, a run folder, one local Ray cluster per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
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
