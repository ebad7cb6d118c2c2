"""`python -m pipeline data`: records written, summary printed, deterministic output, and bad input
rejected with a clear error and nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import CELEBRITIES

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.records import Doc, Fact, Item, read_records
from pipeline.data.stage import build_worlds
from pipeline.worlds import is_validation

FILES = ("docs.parquet", "items.parquet", "facts.parquet")
SMALL = {"reversals": {"n_facts": 4, "articles_per_fact": 2}, "syllogisms": {"n_examples": 5},
         "families": {"n_trees": 1, "docs_per_family": 1, "items_per_split": 5},
         "semantic": {"n_categories": 10, "n_docs": 12, "n_holdout": 1, "items_per_split": 4}}


def write_config(tmp_path: Path, name: str, data: dict, seed: int = 0) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "output_dir": str(tmp_path / "runs"), "seed": seed,
                                    "model": {"ref": "tiny-random"}, "data": data}))
    return path


def digests(run_dir: Path) -> dict[str, str]:
    return {f: hashlib.sha256((run_dir / "data" / f).read_bytes()).hexdigest() for f in FILES}


def test_data_writes_records_and_prints_the_summary(tmp_path, capsys, tiny_model_dir):
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "Zorbs glow at night."}) + "\n")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "When do zorbs glow?", "choices": ["at night", "at noon"], "answer": 0}) + "\n")
    data = dict(SMALL, corpus={"path": str(tmp_path / "docs.jsonl"), "items": str(tmp_path / "qa.jsonl")})
    if CELEBRITIES.is_dir():
        data["celebrities"] = {"path": str(CELEBRITIES), "per_group": 2, "train_templates": 2, "test_templates": 1}
    assert main(["data", str(write_config(tmp_path, "r", data))]) == 0
    out = capsys.readouterr().err  # the pipeline logs to stderr
    run_dir = tmp_path / "runs" / "r"
    docs, items, facts = (read_records(run_dir / "data" / f, k) for f, k in zip(FILES, (Doc, Item, Fact)))
    summary = json.loads((run_dir / "manifests" / "data.json").read_text())["summary"]
    assert (summary["docs"], summary["items"], summary["facts"]) == (len(docs), len(items), len(facts))
    assert set(summary["worlds"]) == set(data)
    rev_docs = [d["text"] for d in docs if d["world"] == "reversals"]
    assert len(rev_docs) == 8
    # the tiny model's tokenizer is byte-level with no merges: one token per UTF-8 byte
    assert summary["worlds"]["reversals"]["tokens"] == sum(len(t.encode()) for t in rev_docs)
    rev = summary["worlds"]["reversals"]["splits"]
    assert rev == {"rephrase": {"items": 4, "choices": 2, "tokens": rev["rephrase"]["tokens"]},
                   "reversal": {"items": 4, "choices": 2, "tokens": rev["reversal"]["tokens"]}}
    lines = [line.split() for line in out.splitlines()]
    assert ["reversals", "train", "8", str(summary["worlds"]["reversals"]["tokens"])] in lines
    assert ["reversals", "reversal", "4", "2", str(rev["reversal"]["tokens"])] in lines
    assert ["corpus", "qa", "1", "2", str(summary["worlds"]["corpus"]["splits"]["qa"]["tokens"])] in lines
    assert any(line[:2] == ["syllogisms", "syllogism"] and line[3] in ("4-5", "4", "5") for line in lines)


WRITE = """
import sys
from pipeline.config import load_config
from pipeline.records import Doc, Fact, Item, write_records
from pipeline.data.stage import build_worlds
cfg = load_config(sys.argv[1])
for rows, kind, name in zip(build_worlds(cfg), (Doc, Item, Fact), ("docs", "items", "facts")):
    write_records(f"{cfg.run_dir}/data/{name}.parquet", kind, rows)
"""


def test_same_seed_gives_byte_identical_files(tmp_path, tiny_model_dir):
    for name, seed in (("a", 0), ("c", 1)):
        assert main(["data", str(write_config(tmp_path, name, SMALL, seed))]) == 0
    root = Path(__file__).resolve().parents[2]
    for name, hash_seed in (("b", "1"), ("d", "2")):  # other processes, other string-hash orders
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(root))
        subprocess.run([sys.executable, "-c", WRITE, str(write_config(tmp_path, name, SMALL, 0))],
                       check=True, env=env, cwd=root)
    a, b, c, d = (digests(tmp_path / "runs" / n) for n in "abcd")
    assert a == b == d
    assert all(a[f] != c[f] for f in FILES)


@pytest.mark.parametrize("data, code, message", [
    ({}, 2, "data: no world is enabled"),
    ({"bogus": {}}, 2, "data.bogus: unknown key"),
    ({"reversals": {"n_facts": 0}}, 2, "data.reversals.n_facts: Input should be greater than 0"),
    ({"families": {"n_trees": 400}}, 2, "data.families: needs"),
    ({"semantic": {"n_holdout": 40}}, 2, "data.semantic: n_holdout: 40 held-out categories"),
    ({"celebrities": {"path": "no/such/folder"}}, 2, "data.celebrities: path: 'no/such/folder' is not a folder"),
    ({"reversals": {}, "corpus": {"path": "BAD"}}, 1, "docs.jsonl:2: not valid JSON"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, data, code, message):
    bad = tmp_path / "docs.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    if "corpus" in data:
        data = dict(data, corpus={"path": str(bad)})
    assert main(["data", str(write_config(tmp_path, "bad", data))]) == code
    err = capsys.readouterr().err  # the stage's progress lines, then the one-line error
    assert ("\n" + err).count("\nerror: ") == 1 and message in err.split("error: ", 1)[1], err
    assert not (tmp_path / "runs" / "bad" / "data").exists()


def test_shipped_configs_build(monkeypatch):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # the celebrities path in demo.yaml is relative to the repository root
    smoke = load_config("configs/smoke.yaml")
    docs, items, _ = build_worlds(smoke)
    assert len(smoke.data.enabled()) in (2, 3) and len(docs) < 40 and len(items) < 40
    demo = load_config("configs/demo.yaml")
    assert demo.data.enabled() == ["reversals", "families"]
    docs, items, _ = build_worlds(demo)
    for world in demo.data.enabled():  # n >= 100 on every split, so that paired intervals are about +-0.1
        splits = Counter(i["split"] for i in items if i["world"] == world)
        assert set(splits) == {"reversals": {"rephrase", "reversal"}, "families": {"composition", "reversal"}}[world]
        assert min(splits.values()) >= 100, (world, splits)
    assert not any(is_validation(i["split"]) for i in items)  # the demo scores test splits only
    if not CELEBRITIES.is_dir():
        pytest.skip("celebrities data not found")
    # reproduce-cpu: the demo's test items (same prompts) on its worlds, the three other worlds,
    # and the validation splits that chose the recipe
    full = load_config("configs/reproduce-cpu.yaml")
    _, full_items, _ = build_worlds(full)
    tests = {i["item_id"]: i["prompt"] for i in full_items
             if not is_validation(i["split"]) and i["world"] in demo.data.enabled()}
    assert tests == {i["item_id"]: i["prompt"] for i in items}
    assert full.data.enabled() == ["reversals", "syllogisms", "semantic", "families", "celebrities"]
    assert sum(i["world"] == "reversals" and is_validation(i["split"]) for i in full_items) == 40  # 20 facts, 2 splits
    assert sum(i["world"] == "celebrities" and is_validation(i["split"]) for i in full_items) > 0
    assert sum(i["world"] == "semantic" and i["split"] == "val_rephrase" for i in full_items) == 40
    assert full.train == demo.train  # the recipe chosen there is the one the demo trains with


@pytest.mark.slow
def test_every_demo_world_fits_whole_in_the_models_window(monkeypatch):
    """ICL puts a world's whole training corpus in context: with the embedded model's tokenizer
    and window, no demo world needs subsampling or truncation."""
    from pipeline.evaluate.icl import icl_contexts
    from pipeline.models import context_window, load_tokenizer

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    demo = load_config("configs/demo.yaml")
    assert demo.evaluate.icl.overflow == "error" and demo.evaluate.icl.doc_fraction == 1.0
    docs, items, _ = build_worlds(demo)
    contexts = icl_contexts(demo, docs, items, load_tokenizer(demo.model), context_window(demo.model))
    assert sorted(contexts) == sorted(demo.data.enabled())
    for world, ctx in contexts.items():
        assert ctx.num_docs == ctx.total_docs and 2000 <= ctx.num_tokens <= 8000, (world, ctx)
