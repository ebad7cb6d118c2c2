"""The `train` stage on a run folder: bad input fails before any worker starts and writes nothing;
a ZeRO-2 run writes a complete model folder per condition and skips it when run again; conditions
with identical examples share one fit."""

from __future__ import annotations

import json

import pytest

from pipeline.config import validate_config
from pipeline.models import ModelError
from pipeline.records import Doc, write_records
from pipeline.runs import Run
from pipeline.stages import record_done
from pipeline.train import stage
from pipeline.train.examples import build_examples

WORDS = ["femp", "glon", "yomp", "troff", "zept", "telk", "brix", "quor", "dask", "vimp", "sarn", "plob"]
DOCS = [
    {"doc_id": f"r{i}", "world": "reversals", "origin": "train",
     "text": f"Did you know that the {a} are more dangerous than the {b}? The {a} are very fast."}
    for i, (a, b) in enumerate(zip(WORDS, WORDS[1:] + WORDS[:1]))
] + [
    {"doc_id": "c0", "world": "celebrities", "origin": "train", "completion_start": 29,
     "text": "Daphne Barrington, known for being the director of A Journey Through Time."},
]


def make_run(tmp_path, docs=DOCS, augmented=None, **overrides) -> tuple:
    raw = {"name": "t", "output_dir": str(tmp_path), "seed": 0, "model": {"ref": "tiny-random"},
           "conditions": ["base", "ft"], "train": {"zero_stage": 2, "lr": 3e-3, "epochs": 3}}
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    cfg = validate_config(raw)
    run = Run.of(cfg)
    run.save_config(cfg)
    write_records(run.path("data", "docs.parquet"), Doc, docs)
    record_done("data", cfg, run, {}, 0.0)
    if augmented is not None:
        write_records(run.path("augment", "augmented.parquet"), Doc, augmented)
        record_done("augment", cfg, run, {}, 0.0)
    return cfg, run


def assert_nothing_written(run):
    assert not run.path("models").exists() and not run.path("train").exists()


@pytest.mark.parametrize("case, error, match", [
    ("no_docs", stage.TrainInputError, r"condition 'ft': no training docs \(origin 'train'\)"),
    ("batch", stage.TrainInputError, r"condition 'ft': train\.batch_size 64 is larger than the 25 training examples"),
    ("augment", stage.TrainInputError, r"train on augmented docs, and .*augmented\.parquet does not exist; run `python -m pipeline augment"),
    ("model", ModelError, r"cannot build a causal LM"),
    ("lora_target", ModelError, r"train\.lora\.target_modules: \['wq'\]"),
])
def test_bad_input_fails_before_any_worker_and_writes_nothing(tmp_path, case, error, match):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    setups = {
        "no_docs": dict(docs=[{**DOCS[0], "origin": "augment:local"}]),
        "batch": dict(train={"batch_size": 64}),
        "augment": dict(conditions=["ft", "ft+local"]),
        "model": dict(model={"ref": str(broken)}),
        "lora_target": dict(train={"lora": {"target_modules": ["q_proj", "wq"]}}),
    }
    cfg, run = make_run(tmp_path, **setups[case])
    with pytest.raises(error, match=match):
        stage.run(cfg, run)  # no Ray cluster: these must fail before one is needed
    assert_nothing_written(run)


def test_stage_writes_complete_model_folders_and_skips_them_on_rerun(ray_cluster, tmp_path, caplog):
    from transformers import AutoTokenizer

    from pipeline.models import load_model, load_tokenizer
    from pipeline.stages import run_stage

    # the local augmentation produced nothing for this run: ft+local trains on exactly ft's examples
    cfg, run = make_run(tmp_path, augmented=[], conditions=["base", "ft", "ft+local"])
    with caplog.at_level("INFO", logger="pipeline"):
        summary = run_stage("train", cfg, run)
    assert sum("examples from" in r.getMessage() for r in caplog.records) == 1  # one fit for both
    shared = summary["ft+local"]
    assert shared["same_fit_as"] == "ft" and shared["skipped"] is False and shared["augmented_docs"] == 0
    assert {k: v for k, v in shared.items() if k != "same_fit_as"} == summary["ft"]
    copy = json.loads(run.path("models", "ft+local", "train_config.json").read_text())
    assert copy["condition"] == "ft+local" and copy["strategies"] == ["local"] and copy["result"]["same_fit_as"] == "ft"
    assert (run.path("models", "ft+local", "model.safetensors").read_bytes()
            == run.path("models", "ft", "model.safetensors").read_bytes())
    ft = summary["ft"]
    # 12 docs x 2 sentences + 1 unsplit prompt/completion doc
    assert ft["examples"] == 25 and ft["steps"] == 3 * 4 and ft["skipped"] is False
    assert ft["last_epoch_loss"] < ft["first_epoch_loss"] - 1.0
    assert 0 <= ft["padding_share"] < 0.35
    folder = run.path("models", "ft")
    record = json.loads((folder / "train_config.json").read_text())
    assert record["condition"] == "ft" and record["train"]["zero_stage"] == 2 and record["seed"] == 0
    assert record["result"]["steps"] == 12
    assert len(json.loads((folder / "train_log.json").read_text())["losses"]) == 12
    load_model(str(folder))
    text = "The glon are less dangerous than the femp."
    assert AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == load_tokenizer("tiny-random")(text)["input_ids"]
    assert sorted(p.name for p in run.path("models").iterdir()) == ["ft", "ft+local"]  # no temp folders left
    assert not run.path("train").exists()  # Ray Train storage cleaned up

    again = stage.run(cfg, run)
    assert again["ft"]["skipped"] is True and again["ft+local"]["skipped"] is True
    # a changed config or changed data is retrained, not reused
    prepared = stage.prepare("ft", cfg, DOCS, [], load_tokenizer("tiny-random"), 512)
    same = stage.training_record(cfg, prepared, record["base_model_path"])
    assert stage.reusable(folder, same)
    reseeded = cfg.model_copy(update={"seed": 1})
    assert not stage.reusable(folder, stage.training_record(reseeded, stage.prepare("ft", reseeded, DOCS, [], load_tokenizer("tiny-random"), 512), record["base_model_path"]))
    fewer = stage.prepare("ft", cfg, DOCS[1:], [], load_tokenizer("tiny-random"), 512)
    assert not stage.reusable(folder, stage.training_record(cfg, fewer, record["base_model_path"]))


def test_oracle_min_copies_sets_how_often_the_fit_sees_an_oracle_doc(tmp_path):
    """`train.oracle_min_copies` reaches the fit's examples (and so its fingerprint and steps)."""
    from pipeline.models import load_tokenizer

    oracle = [{"doc_id": "o1", "world": "reversals", "origin": "augment:oracle", "facts": [],
               "text": "The glon are less dangerous than the femp."}]
    tok = load_tokenizer("tiny-random")
    prepared = {}
    for copies in (1, 3):
        cfg, _ = make_run(tmp_path / str(copies), conditions=["ft+oracle"], train={"oracle_min_copies": copies})
        prepared[copies] = stage.prepare("ft+oracle", cfg, DOCS, oracle, tok, 512)
    plain = len(build_examples(DOCS, "independent"))
    assert (prepared[1].examples, prepared[3].examples) == (plain + 1, plain + 3)
    assert prepared[1].fingerprint != prepared[3].fingerprint
