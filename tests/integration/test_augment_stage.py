"""The augment stage on a local Ray cluster: tiny generator, the fake comparison world."""

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import test_augment_fake_world as fake  # noqa: E402

from pipeline.augment import stage  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from pipeline.records import Doc, read_records  # noqa: E402
from pipeline.runs import Run  # noqa: E402


def make_run(tmp_path, name="aug", **augment):
    augment = {"generator": {"ref": "tiny-random"}, "cpus_per_actor": 1, "num_actors": 1, "shard_size": 2,
               "local_max_new_tokens": 8, "global_max_new_tokens": 8, "batch_size": 2, **augment}
    cfg = validate_config({"name": name, "output_dir": str(tmp_path), "model": {"ref": "tiny-random"}, "augment": augment})
    run = Run.of(cfg)
    fake.write_finished_data(run)
    return cfg, run


@pytest.fixture(autouse=True)
def fake_world(monkeypatch):
    monkeypatch.setattr(stage, "world_module", lambda name: fake if name == fake.WORLD else None)


def shard_rows(run):
    return [r for p in sorted(run.path("augment", "shards").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_stage_output_and_an_interrupted_run_resumed_with_every_row_exactly_once(ray_cluster, tmp_path, monkeypatch):
    # a clean run
    clean_cfg, clean = make_run(tmp_path, name="clean")
    summary = stage.run(clean_cfg, clean)
    rows = read_records(clean.path("augment", "augmented.parquet"), Doc)
    origins = {r["origin"] for r in rows}
    assert "augment:oracle" in origins and origins <= {"augment:local", "augment:global", "augment:oracle"}
    assert all(r["source_doc_id"] for r in rows)
    audit = json.loads(clean.path("augment", "audit.json").read_text())
    oracle = audit["worlds"][fake.WORLD]["strategies"]["oracle"]
    assert oracle["precision"] == 1.0 and oracle["reversal_coverage"] == 1.0
    # 4 facts x 2 docs: 8 distinct local sentences and 8 global targets; one result per prompt
    results = shard_rows(clean)
    assert summary["prompts"] == 16 == len(results) == len({r["request_id"] for r in results})
    assert {r["request_id"].split("/")[0] for r in results} == {"local", "global"}
    gen = audit["generation"]
    assert gen["local/fakecmp"]["generations"] == 8 and gen["global/fakecmp"]["generations"] == 8
    assert summary["prefix_groups"] == 1 and audit["run"]["prefix_groups"] == 1
    # the report's FLOPs count each shared prefix once: 8 prompts after one prefix run it 7 times fewer
    for strategy in ("local", "global"):
        saved = summary["tokens_by_strategy"][strategy] - summary["computed_tokens_by_strategy"][strategy]
        assert saved > 0 and saved % 7 == 0, (strategy, saved)

    # the same config in another run folder, killed after two shards, then re-run
    cfg, run = make_run(tmp_path, name="killed")

    def fail_after_two(written):
        if written >= 2:
            raise RuntimeError("injected fault after 2 shards")

    with pytest.raises(RuntimeError, match="injected fault"):
        stage.run(cfg, run, after_shard=fail_after_two)
    shard_dir = run.path("augment", "shards")
    first = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.parquet")}
    assert len(first) == 2 and not run.path("augment", "audit.json").exists()

    stage.run(cfg, run)
    after = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.parquet")}
    assert len(after) == 8 and all(after[name] == t for name, t in first.items())  # finished shards were kept
    resumed = shard_rows(run)
    assert len(resumed) == 16 == len({r["request_id"] for r in resumed})
    assert sorted((r["request_id"], r["text"]) for r in resumed) == sorted((r["request_id"], r["text"]) for r in results)
    assert read_records(run.path("augment", "augmented.parquet"), Doc) == rows


def test_only_the_oracle_needs_no_generator(ray_cluster, tmp_path):
    cfg, run = make_run(tmp_path, name="oracle")
    cfg.conditions = ["base", "ft+oracle"]
    summary = stage.run(cfg, run)
    assert summary["prompts"] == 0 and summary["rows_by_strategy"] == {"oracle": 4}
    assert not run.path("augment", "shards").exists()


def test_documents_over_the_context_window_are_skipped_and_counted_or_an_error(ray_cluster, tmp_path):
    from pipeline.augment.plan import PromptTooLong

    cfg, run = make_run(tmp_path, name="window", generator={"ref": "tiny-random", "max_context": 300})
    cfg.conditions = ["ft+global"]
    summary = stage.run(cfg, run)  # every global prompt (the corpus, one doc, the instruction) is over 300 tokens
    audit = json.loads(run.path("augment", "audit.json").read_text())
    assert summary["prompts"] == 0 and summary["skipped_too_long"] == 8 == audit["run"]["skipped_too_long"]
    assert audit["generation"]["global/fakecmp"] == {"too_long": 8}
    cfg.augment.strict = True
    with pytest.raises(PromptTooLong, match=r"doc 'fakecmp-d0-0'.*over the context window of 300"):
        stage.run(cfg, run)
