"""A tiny comparison world with the world-module contract (build / closure / parse / oracle).

The augment tests use it instead of the real worlds, so they test the augment stage alone.
Sentences: "<a> are more|less <adjective> than <b>." Relations: "more <adjective>" and
"less <adjective>"; the closure adds each fact's reversal.
"""

from __future__ import annotations

import re

WORLD = "fakecmp"
ENTITIES = ("femp", "glon", "yomp", "troff", "blek", "sarn")
#: (subject, adjective, object): subject is more <adjective> than object.
TRUTHS = (("femp", "dangerous", "glon"), ("yomp", "heavy", "troff"), ("blek", "bright", "sarn"), ("glon", "heavy", "sarn"))
LEADS = ("Did you know that {s} are more {a} than {o}?", "It is known that {s} are more {a} than {o}.")
_SENTENCE = re.compile(r"^(?:did you know that |it is known that )?(\w+) are (more|less) (\w+) than (\w+)\s*[.?!]?$", re.I)


def build(cfg=None, seed: int = 0):
    facts, docs, items = [], [], []
    for i, (s, a, o) in enumerate(TRUTHS):
        fid = f"{WORLD}-f{i}"
        facts.append({"fact_id": fid, "world": WORLD, "subject": s, "relation": f"more {a}", "object": o})
        for j, lead in enumerate(LEADS):
            docs.append({"doc_id": f"{WORLD}-d{i}-{j}", "world": WORLD, "text": lead.format(s=s, a=a, o=o),
                         "origin": "train", "source_doc_id": None, "facts": [fid], "completion_start": 0})
        items.append({"item_id": f"{WORLD}-rev{i}", "world": WORLD, "split": "reversal", "subtask": a,
                      "prompt": f"{o} are", "choices": [f" less {a} than {s}.", f" more {a} than {s}."],
                      "answer_index": 0, "support_fact_ids": [fid]})
        items.append({"item_id": f"{WORLD}-reph{i}", "world": WORLD, "split": "rephrase", "subtask": a,
                      "prompt": f"{s} are", "choices": [f" less {a} than {o}.", f" more {a} than {o}."],
                      "answer_index": 1, "support_fact_ids": [fid]})
    return docs, items, facts


def closure(facts):
    out = set()
    for f in facts:
        adjective = f["relation"].split(" ", 1)[1]
        out.add((f["subject"], f"more {adjective}", f["object"]))
        out.add((f["object"], f"less {adjective}", f["subject"]))
    return out


def parse(sentence, facts):
    known = {f["subject"] for f in facts} | {f["object"] for f in facts}
    m = _SENTENCE.match(sentence.strip())
    if not m:
        return None
    a, direction, adjective, b = m.group(1).lower(), m.group(2).lower(), m.group(3).lower(), m.group(4).lower()
    if a not in known or b not in known:
        return None
    return [(a, f"{direction} {adjective}", b)]


def oracle(facts):
    return [(f"{f['object'].capitalize()} are less {f['relation'].split(' ', 1)[1]} than {f['subject']}.", [f["fact_id"]]) for f in facts]


def write_finished_data(run) -> None:
    """Write this world as `run`'s finished data stage (docs, items, facts, manifest)."""
    from pipeline.records import Doc, Fact, Item, write_records

    docs, items, facts = build()
    write_records(run.path("data", "docs.parquet"), Doc, docs)
    write_records(run.path("data", "items.parquet"), Item, items)
    write_records(run.path("data", "facts.parquet"), Fact, facts)
    run.mark_done("data", {}, 0.0)


# ---------------------------------------------------------------- the fake world keeps its own contract


def test_fake_world_oracle_sentences_parse_into_the_closure():
    _, _, facts = build()
    truth = closure(facts)
    for sentence, fact_ids in oracle(facts):
        triples = parse(sentence, facts)
        assert triples and all(t in truth for t in triples), sentence
        assert fact_ids and all(f.startswith(WORLD) for f in fact_ids)


def test_fake_world_parse_rejects_unknown_entities_and_patterns():
    _, _, facts = build()
    assert parse("Wugs are more heavy than glon.", facts) is None
    assert parse("Femp like glon.", facts) is None
    assert parse("Glon are more dangerous than femp.", facts) == [("glon", "more dangerous", "femp")]
    assert ("glon", "more dangerous", "femp") not in closure(facts)
