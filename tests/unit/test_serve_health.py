"""Health checks of the deployments (constructed directly, no cluster): a replica whose run folder
disappears reports itself unhealthy, so Serve replaces it."""

from __future__ import annotations

import shutil

import pytest

from pipeline.config import RunConfig, config_to_dict
from pipeline.records import Item, write_records


@pytest.fixture
def cfg(tmp_path, tiny_model_dir) -> RunConfig:
    cfg = RunConfig(name="r", output_dir=str(tmp_path), model={"ref": str(tiny_model_dir)})
    write_records(cfg.run_dir / "data" / "items.parquet", Item, [{
        "item_id": "i0", "world": "w", "split": "s", "subtask": "t", "prompt": "p", "choices": ["a", "b"],
        "answer_index": 0}])
    return cfg


def test_generator_and_evaluator_fail_their_check_when_the_run_is_gone(cfg):
    import torch

    from serve.evaluator import Evaluator
    from serve.generator import Generator

    threads = torch.get_num_threads()
    try:  # a replica sets torch's thread count: keep this process's as it was
        generator = Generator.func_or_class(config_to_dict(cfg), 1, 4, 0.01, threads)
        evaluator = Evaluator.func_or_class(config_to_dict(cfg), 1, 4, threads)
    finally:
        torch.set_num_threads(threads)
    generator.check_health()
    evaluator.check_health()
    shutil.rmtree(cfg.run_dir)
    with pytest.raises(RuntimeError, match="the run folder is gone"):
        generator.check_health()
    with pytest.raises(RuntimeError, match="items.parquet is gone"):
        evaluator.check_health()
