"""GPU only (skipped without CUDA): the HF engine on CUDA and the vLLM engine through ray.data.llm."""

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import test_augment_fake_world as fake  # noqa: E402

pytestmark = pytest.mark.gpu


def test_hf_engine_cached_prefix_matches_reencoding_on_cuda(tiny_model_dir):
    from pipeline.augment.engines import HFEngine

    engine = HFEngine(str(tiny_model_dir), device="cuda", batch_size=2)
    prefix = "Documents:\nFemp are bigger than glon.\n\n"
    suffixes = ["Target document:\nFemp.", "Target document:\nGlon are small.", "x"]
    cached = engine.generate_with_prefix(prefix, suffixes, max_new_tokens=12)
    fresh = engine.generate_with_prefix(prefix, suffixes, max_new_tokens=12, use_cache=False)
    assert [g[0].token_ids for g in cached] == [g[0].token_ids for g in fresh]
    assert engine.prefix_encodings == 1


def test_vllm_stage_returns_every_prompt_once(ray_cluster, tmp_path, monkeypatch):
    pytest.importorskip("vllm")
    from pipeline.augment import stage
    from pipeline.config import validate_config
    from pipeline.records import Doc, read_records
    from pipeline.runs import Run

    monkeypatch.setattr(stage, "world_module", lambda name: fake if name == fake.WORLD else None)
    cfg = validate_config({"name": "vllm", "output_dir": str(tmp_path), "model": {"ref": "tiny-random"},
                           "augment": {"generator": {"ref": "tiny-random"}, "engine": "vllm", "shard_size": 4,
                                       "local_max_new_tokens": 8, "global_max_new_tokens": 8,
                                       "vllm_engine_kwargs": {"gpu_memory_utilization": 0.3, "enforce_eager": True}}})
    run = Run.of(cfg)
    fake.write_finished_data(run)
    summary = stage.run(cfg, run)
    results = [r for p in run.path("augment", "shards").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert summary["prompts"] == 16 == len(results) == len({r["request_id"] for r in results})
    assert all(r["status"] in ("ok", "empty") for r in results)
    assert any(r["new_tokens"] > 0 for r in results)
    read_records(run.path("augment", "augmented.parquet"), Doc)
