"""The evaluate stage on a local Ray cluster with the tiny model and hand-made docs and items."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import models
from pipeline.config import validate_config
from pipeline.conditions import ConditionError, condition_spec, load_condition_tokenizer
from pipeline.evaluate.icl import icl_contexts
from pipeline.evaluate.scorer import PoolShape, plan, score_local, score_on_ray
from pipeline.evaluate.scoring import encode_prefix, score_items
from pipeline.records import SCHEMAS, Doc, Item, RecordError, Score, read_records, write_records
from pipeline.runs import Run
from pipeline.stages import record_done, run_stage

WORDS = ["femp", "glon", "yomp", "troff", "blick", "zept"]


def make_data():
    docs, items = [], []
    for world in ("reversals", "syllogisms"):
        for i, (a, b) in enumerate(zip(WORDS, WORDS[1:])):
            docs.append({"doc_id": f"{world}-d{i}", "world": world, "origin": "train",
                         "text": f"Did you know that {a} are more dangerous than {b}?"})
            items.append({"item_id": f"{world}-q{i}", "world": world, "split": "reversal" if i % 2 else "rephrase",
                          "subtask": "danger", "prompt": f"{b} are less dangerous than",
                          "choices": [a, WORDS[(i + 3) % len(WORDS)]] + (["troff and zept"] if i % 3 == 0 else []),
                          "answer_index": 0})
    docs.append({"doc_id": "aug-0", "world": "reversals", "origin": "augment:local", "source_doc_id": "reversals-d0",
                 "text": "This augmented sentence must not reach the ICL context."})
    return docs, items


def make_run(tmp_path, conditions=("base", "icl", "ft"), generator=None, **evaluate):
    cfg = validate_config({"name": "ev", "output_dir": str(tmp_path), "model": {"ref": "tiny-random"},
                           "conditions": list(conditions), "evaluate": {"num_actors": 2, "batch_size": 4, **evaluate},
                           **({"augment": {"generator": {"ref": str(generator)}}} if generator else {})})
    run = Run.of(cfg)
    docs, items = make_data()
    write_records(run.path("data", "docs.parquet"), Doc, docs)
    write_records(run.path("data", "items.parquet"), Item, items)
    record_done("data", cfg, run, {}, 0.0)
    if cfg.ft_conditions():
        record_done("train", cfg, run, {}, 0.0)  # the folders under models/ are put there by each test
    return cfg, run, items


@pytest.fixture(scope="module")
def ft_folder(tmp_path_factory):
    return models.build_tiny_model(tmp_path_factory.mktemp("ft") / "model", seed=1)  # a different model


def test_stage_writes_scores_and_results(tmp_path, ray_cluster, ft_folder, caplog):
    cfg, run, items = make_run(tmp_path)
    models_dir = run.path("models", "ft")
    models_dir.parent.mkdir(parents=True)
    models_dir.symlink_to(ft_folder)
    with caplog.at_level("INFO", logger="pipeline"):
        summary = run_stage("evaluate", cfg, run)

    scores = {c: read_records(run.path("scores", f"{c}.parquet"), Score) for c in ("base", "icl", "ft")}
    for condition, rows in scores.items():
        assert [r["item_id"] for r in rows] == [it["item_id"] for it in items]
        assert all(r["condition"] == condition for r in rows)
        assert [len(r["choice_logprobs"]) for r in rows] == [len(it["choices"]) for it in items]
        assert all(lp < 0 for r in rows for lp in r["choice_logprobs"])
    assert scores["icl"][0]["choice_logprobs"] != scores["base"][0]["choice_logprobs"]
    assert scores["ft"][0]["choice_logprobs"] != scores["base"][0]["choice_logprobs"]

    # the Ray pool gave what the pure function gives on one process
    model, tok = models.load_model("tiny-random"), models.load_tokenizer("tiny-random")
    direct = score_items(model, tok, items, batch_size=4)
    assert [r["choice_logprobs"] for r in scores["base"]] == [d["choice_logprobs"] for d in direct]

    results = json.loads(run.path("results.json").read_text())
    assert results["conditions"] == ["base", "icl", "ft"]
    row = next(r for r in results["rows"] if (r["condition"], r["world"], r["split"]) == ("icl", "reversals", "*"))
    assert row["n"] == 5 and 0 <= row["acc"] <= 1 and row["chance"] == pytest.approx((2 * 1 / 3 + 3 * 1 / 2) / 5)
    assert results["icl"]["reversals"]["num_docs"] == 5 and results["icl"]["reversals"]["prefix_tokens"] > 100
    assert results["timing"]["icl"]["sequences"] == sum(len(it["choices"]) for it in items)
    assert summary["conditions"] == ["base", "icl", "ft"] and summary["items"] == 10
    table = caplog.text
    base = next(r for r in results["rows"] if (r["condition"], r["world"], r["split"]) == ("base", "reversals", "reversal"))
    assert re.search(rf"^reversals +reversal +{base['n']} +{base['chance']:.2f} +{base['acc']:.2f}±", table, re.M)


def test_the_generators_icl_is_its_own_model_with_its_own_rendering_of_the_context(tmp_path, ray_cluster, ft_folder):
    from pipeline.stages import stage_state

    cfg, run, items = make_run(tmp_path, conditions=("icl", "icl-generator"), generator=ft_folder)
    run_stage("evaluate", cfg, run)
    scores = {c: read_records(run.path("scores", f"{c}.parquet"), Score) for c in ("icl", "icl-generator")}
    results = json.loads(run.path("results.json").read_text())
    assert results["icl_generator"]["reversals"]["num_docs"] == 5
    assert results["icl"]["reversals"]["num_docs"] == 5

    # what the pure function gives with the generator's weights and its own context, world by world
    model, tok = models.load_model(str(ft_folder)), models.load_tokenizer(str(ft_folder))
    docs = read_records(run.path("data", "docs.parquet"), Doc)
    contexts = icl_contexts(cfg, docs, items, tok, models.context_window(cfg.augment.generator))
    direct = {}
    for world, ctx in contexts.items():
        world_items = [it for it in items if it["world"] == world]
        for row in score_items(model, tok, world_items, prefix=encode_prefix(model, tok, ctx.text), batch_size=4):
            direct[row["item_id"]] = row["choice_logprobs"]
    got = {r["item_id"]: r["choice_logprobs"] for r in scores["icl-generator"]}
    assert got.keys() == direct.keys()
    for item_id, logprobs in got.items():
        assert logprobs == pytest.approx(direct[item_id], abs=1e-4)
    assert [r["choice_logprobs"] for r in scores["icl"]] != [r["choice_logprobs"] for r in scores["icl-generator"]]

    # the generator is part of what the scores depend on
    other = validate_config({**cfg.model_dump(), "augment": {"generator": {"ref": "tiny-random", "dtype": "bfloat16"}}})
    state, reasons = stage_state("evaluate", other, run)
    assert state == "stale" and any("augment.generator" in r for r in reasons), reasons


def test_ray_actor_pool_equals_the_single_process_scorer(tmp_path, ray_cluster):
    cfg, run, items = make_run(tmp_path, conditions=("base", "icl"))
    docs = read_records(run.path("data", "docs.parquet"), Doc)
    base_spec = condition_spec(cfg, run, "base")
    tok = load_condition_tokenizer(base_spec)
    contexts = icl_contexts(cfg, docs, items, tok, window=4096)
    assert "augmented" not in contexts["reversals"].text
    spec = condition_spec(cfg, run, "icl", contexts)
    the_plan = plan(items, tok, 3, prefix_tokens={w: c.num_tokens for w, c in contexts.items()}, window=4096)
    for row in the_plan.rows:  # a batch never mixes worlds: one prefix per batch
        assert {items[the_plan.requests[k].item]["world"] for k in row["request"]} == {row["world"]}
    base_plan = plan(items, tok, 5, prefix_tokens=None, window=4096)
    specs, plans = {"icl": spec, "base": base_spec}, {"icl": the_plan, "base": base_plan}
    on_ray, seconds = score_on_ray(specs, items, plans, PoolShape(actors=2, threads=1, gpus_per_actor=0))
    threads = torch.get_num_threads()
    model = models.load_model("tiny-random")
    world_items = [it for it in items if it["world"] == "syllogisms"]
    try:
        local, _ = score_local(specs, items, plans, threads=1)  # the actors' thread count
        assert on_ray == local  # exactly: the plan fixes every batch
        other, _ = score_local(specs, items, plans, threads=2)  # another thread count: within float noise
        # the pure function with the world's prefix gives the same (same batches, same 2 threads)
        direct = score_items(model, tok, world_items, prefix=encode_prefix(model, tok, contexts["syllogisms"].text), batch_size=3)
    finally:
        torch.set_num_threads(threads)
    for c in local:
        for a, b in zip(other[c], local[c]):
            assert a["choice_logprobs"] == pytest.approx(b["choice_logprobs"], abs=1e-5)
    assert local["icl"] != local["base"] and set(seconds) == {"icl", "base"}
    assert [r for r in other["icl"] if r["item_id"].startswith("syllogisms")] == direct

def test_bad_item_is_rejected_naming_it_and_nothing_is_written(tmp_path, ray_cluster):
    cfg, run, items = make_run(tmp_path, conditions=("base",))
    items = [{**it, "support_fact_ids": []} for it in items]
    items[3]["answer_index"] = 7  # written past the record checks, as a foreign tool might
    pq.write_table(pa.Table.from_pylist(items, schema=SCHEMAS[Item]), run.path("data", "items.parquet"))
    record_done("data", cfg, run, {}, 0.0)  # as if the data stage had written it
    with pytest.raises(RecordError, match=r"items.parquet: Item 'reversals-q3': .*answer_index 7 out of range"):
        run_stage("evaluate", cfg, run)
    assert not run.path("scores").exists() and not run.path("results.json").exists()
    assert not run.is_done("evaluate")


def test_missing_ft_model_fails_before_scoring(tmp_path, ray_cluster):
    cfg, run, _ = make_run(tmp_path, conditions=("base", "ft"))
    with pytest.raises(ConditionError, match="run `python -m pipeline train CONFIG` first"):
        run_stage("evaluate", cfg, run)
    assert not run.path("scores").exists()
