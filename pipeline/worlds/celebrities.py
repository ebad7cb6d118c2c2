"""Reversal-curse celebrities (Berglund et al. 2023), imported from a folder in their format.

Three groups of fictional people: p2d (trained name -> description), d2p (description ->
name) and both (trained in both orders). Training = all.jsonl: each line a prompt/completion
pair, Doc.text = prompt + completion, trained on the completion only. Tests, scored over the
true completion and `n_choices - 1` random other celebrities' ones:
- reversal: p2d_reverse_prompts_test.jsonl (description -> name for p2d people), the test the
  paper uses;
- rephrase (same direction, held-out templates): p2d_prompts_test.jsonl (name -> description),
  d2p_prompts_test.jsonl (description -> name), both_prompts_test.jsonl (both);
- val_reversal, val_rephrase: the same tests on `validation_templates` further prompts per kept
  person and file, ones the test items do not use, for choosing a training recipe (e.g.
  `train_templates`) without looking at the test items: the same people and facts, other
  prompts. They are drawn with a random generator of their own, so the docs, facts and test
  items are the same with or without them.
A person's description is the completion they have most often in the name -> description test
files. Facts: (name, "has_description", description) for people trained name-first,
(description, "is_description_of", name) for people trained description-first.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

from pipeline import storage

from pipeline.worlds import VALIDATION_PREFIX, DataFileError, WorldError
from pipeline.worlds.choices import balance_answers
from pipeline.worlds.templates import PerFacts

WORLD = "celebrities"
FORWARD, BACKWARD = "has_description", "is_description_of"
REQUIRED = ("all.jsonl", "p2d_reverse_prompts_test.jsonl", "p2d_prompts_test.jsonl",
            "d2p_prompts_test.jsonl", "d2p_reverse_prompts_test.jsonl", "both_prompts_test.jsonl")
GROUPS = ("p2d", "d2p", "both")
#: (split, test file), in item order.
TESTS = (("reversal", "p2d_reverse_prompts_test.jsonl"), ("rephrase", "p2d_prompts_test.jsonl"),
         ("rephrase", "d2p_prompts_test.jsonl"), ("rephrase", "both_prompts_test.jsonl"))
_NAME = re.compile(r"^\s*([A-Z][a-z]+ [A-Z][a-z]+)\b")
_STOP = frozenset("the and that with their they them were this from known into world first person being "
                  "have role which whose only about once".split())
log = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}:{n}: not valid JSON ({err.msg})") from None
        if not (isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str)):
            raise DataFileError(f"{path}:{n}: expected an object with string fields 'prompt' and 'completion'")
        rows.append(row)
    return rows


def load(folder: str) -> dict[str, list[dict]]:
    """The reversal-curse files of `folder`: a local path (relative to the working directory) or a
    URI in storage (s3://, gs://, ...; see pipeline.storage)."""
    root = storage.location(folder)
    if not root.is_dir():
        raise WorldError(f"path: {folder!r} is not a folder (resolved to {root.resolve()}); it must hold the "
                         f"reversal-curse files {', '.join(REQUIRED)}")
    missing = [f for f in REQUIRED if not (root / f).is_file()]
    if missing:
        raise WorldError(f"path: {folder!r} lacks {', '.join(missing)} (resolved to {root.resolve()})")
    return {f: read_jsonl(root / f) for f in REQUIRED}


def _people(files: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Group -> names, in first-appearance order."""
    d2p = [r["completion"].strip() for r in files["d2p_prompts_test.jsonl"]]
    p2d = [r["completion"].strip() for r in files["p2d_reverse_prompts_test.jsonl"]]
    first = [m.group(1) for r in files["all.jsonl"] if (m := _NAME.match(r["completion"]))]
    both = [n for n in first if n not in set(d2p)]
    return {g: list(dict.fromkeys(v)) for g, v in (("p2d", p2d), ("d2p", d2p), ("both", both))}


def _owner(text: str, names: list[str]) -> str:
    hits = [n for n in names if n in text]
    if len(hits) != 1:
        raise DataFileError(f"celebrities: a line names {len(hits)} known people, expected 1: {text[:120]!r}")
    return hits[0]


def build(cfg, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(f"{WORLD}:{seed}")
    files = load(cfg.path)
    groups = _people(files)
    everyone = [n for g in GROUPS for n in groups[g]]
    kept = {g: sorted(rng.sample(groups[g], min(cfg.per_group or len(groups[g]), len(groups[g])))) for g in GROUPS}
    keep = {n for g in GROUPS for n in kept[g]}
    descriptions: dict[str, Counter] = defaultdict(Counter)
    for f in ("p2d_prompts_test.jsonl", "d2p_reverse_prompts_test.jsonl", "both_prompts_test.jsonl"):
        for r in files[f]:
            if not any(n in r["completion"] for n in everyone):
                descriptions[_owner(r["prompt"], everyone)][r["completion"].strip()] += 1
    desc = {n: _clean(descriptions[n].most_common(1)[0][0]) for n in sorted(keep)}
    facts = []
    for g in GROUPS:
        for n in kept[g]:
            if g in ("p2d", "both"):
                facts.append(_fact(len(facts), n, FORWARD, desc[n]))
            if g in ("d2p", "both"):
                facts.append(_fact(len(facts), desc[n], BACKWARD, n))
    fact_of = {(f["subject"], f["relation"]) if f["relation"] == FORWARD else (f["object"], f["relation"]): f["fact_id"]
               for f in facts}
    docs = _docs(files["all.jsonl"], everyone, keep, fact_of, cfg.train_templates, rng)
    items, tested = [], {}
    for split, f in TESTS:
        tested[f] = _items(split, files[f], everyone, keep, fact_of, cfg, rng, cfg.test_templates, start=len(items))
        items += tested[f]
    held = _validation(files, everyone, keep, fact_of, cfg, tested, seed)
    return docs, balance_answers(items, rng) + held, facts


def _validation(files, everyone, keep, fact_of, cfg, tested, seed) -> list[dict]:
    """Validation items: per kept person and test file, `validation_templates` of the prompts that
    file's test items (`tested[file]`) do not use, or as many as are left. Prompts, distractors
    and answer positions come from a random generator of their own, so that adding them changes
    nothing else the world builds."""
    if not cfg.validation_templates:
        return []
    rng = random.Random(f"{WORLD}:validation:{seed}")
    person = {fact_id: name for (name, _), fact_id in fact_of.items()}
    items, short = [], []
    for split, f in TESTS:
        made = _items(VALIDATION_PREFIX + split, files[f], everyone, keep, fact_of, cfg, rng, cfg.validation_templates,
                      start=len(items), skip={i["prompt"] for i in tested[f]})
        wanted = cfg.validation_templates * len({person[i["support_fact_ids"][0]] for i in tested[f]})
        if len(made) < wanted:
            short.append(f"{f}: {len(made)} of {wanted}")
        items += made
    if short:
        log.warning("celebrities: validation_templates %d asks for more prompts than the test items leave unused; "
                    "taking what there is (%s)", cfg.validation_templates, "; ".join(short))
    return balance_answers(items, rng)


def _clean(description: str) -> str:
    """'the composer of "Abyssal Melodies.".' -> 'the composer of "Abyssal Melodies"' (no inner
    full stop, so a sentence that continues after the description is not split there)."""
    text = description.strip().removesuffix(".")
    return re.sub(r"""[.!?](["'])$""", r"\1", text).strip()


def _fact(i: int, s: str, r: str, o: str) -> dict:
    return {"fact_id": f"{WORLD}/f{i:03d}", "world": WORLD, "subject": s, "relation": r, "object": o}


def _direction(row: dict, name: str) -> str:
    return FORWARD if name in row["prompt"] else BACKWARD


def _fact_id(fact_of: dict, name: str, direction: str) -> str:
    """The fact a line of this person in this direction states; an error if their group has none."""
    if (name, direction) not in fact_of:
        order = "name-first" if direction == FORWARD else "description-first"
        raise DataFileError(f"celebrities: a {order} line for {name!r}, whose group is never trained that way")
    return fact_of[(name, direction)]


def _docs(rows, everyone, keep, fact_of, per_direction, rng) -> list[dict]:
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        n = _owner(r["prompt"] + r["completion"], everyone)
        if n in keep:
            by_key[(n, _direction(r, n))].append(i)
    chosen = []
    for (n, direction), idx in sorted(by_key.items()):
        k = min(per_direction or len(idx), len(idx))
        chosen += [(i, n, direction) for i in sorted(rng.sample(idx, k))]
    docs = []
    for i, n, direction in sorted(chosen):
        r = rows[i]
        docs.append({"doc_id": f"{WORLD}/d{len(docs):05d}", "world": WORLD, "origin": "train",
                     "text": r["prompt"] + r["completion"], "completion_start": len(r["prompt"]),
                     "facts": [_fact_id(fact_of, n, direction)]})
    return docs


def _items(split, rows, everyone, keep, fact_of, cfg, rng, templates, start, skip=frozenset()) -> list[dict]:
    """Items of one test file: per kept person, `templates` prompts (all if None) other than those
    in `skip`; distractors are the completions other kept people have for the same template."""
    by_template: dict[str, dict[str, str]] = defaultdict(dict)
    owners = []
    for r in rows:
        n = _owner(r["prompt"] + r["completion"], everyone)
        template = r["prompt"].replace(n, "{name}")
        by_template[template][n] = r["completion"]
        owners.append((n, template, r))
    per_person: dict[str, list] = defaultdict(list)
    for n, template, r in owners:
        if n in keep and r["prompt"].rstrip() not in skip:
            per_person[n].append((template, r))
    items = []
    for n in sorted(per_person):
        rows_n = per_person[n]
        k = min(templates or len(rows_n), len(rows_n))
        for template, r in rng.sample(rows_n, k):
            direction = _direction(r, n)
            if direction == BACKWARD:  # the name is the answer: swap in other people's names
                others = [p for p in sorted(keep) if p != n]
                wrong = [r["completion"].replace(n, p) for p in rng.sample(others, min(cfg.n_choices - 1, len(others)))]
            else:  # the description is the answer: other people's completions of this template
                others = sorted(c for p, c in by_template[template].items() if p != n and p in keep)
                others = sorted(set(others) - {r["completion"]})
                wrong = rng.sample(others, min(cfg.n_choices - 1, len(others)))
            reversal = split.removeprefix(VALIDATION_PREFIX) == "reversal"  # asks the untrained direction
            support = _fact_id(fact_of, n, FORWARD if reversal else direction)
            items.append({"item_id": f"{WORLD}/{split}/{start + len(items):04d}", "world": WORLD, "split": split,
                          "subtask": direction, "prompt": r["prompt"].rstrip(),
                          "choices": [_choice(r["completion"])] + [_choice(w) for w in wrong],
                          "answer_index": 0, "support_fact_ids": [support]})
    return items


def _choice(completion: str) -> str:
    return " " + completion.strip()


# ------------------------------------------------------------------ closure, oracle, parse


def closure(facts: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for f in facts:
        name, d = (f["subject"], f["object"]) if f["relation"] == FORWARD else (f["object"], f["subject"])
        out |= {(name, FORWARD, d), (d, BACKWARD, name)}
    return out


def oracle(facts: list[dict]) -> list[tuple[str, list[str]]]:
    """The untrained direction of every person: "<Description> is <name>." or "<name> is <description>."."""
    stated = {(f["subject"], f["relation"], f["object"]) for f in facts}
    ids = {f["subject"] if f["relation"] == FORWARD else f["object"]: f["fact_id"] for f in facts}
    out = []
    for s, r, o in sorted(closure(facts)):
        if (s, r, o) in stated:
            continue
        if r == FORWARD:
            out.append((f"{s} is {o}.", [ids[s]]))
        else:
            out.append((f"{s[:1].upper()}{s[1:]} is {o}.", [ids[o]]))
    return out


def _keys(text: str) -> list[tuple[int, str]]:
    """(position, key) of the content words of a text; a key is a word's first five letters."""
    return [(m.start(), m.group().lower()[:5]) for m in re.finditer(r"[A-Za-z]+", text)
            if len(m.group()) >= 4 and m.group().lower() not in _STOP]


def _build_index(facts: list[dict]):
    """(name -> description, name -> description keys, key -> weight) of a world's facts."""
    people = {}
    for f in facts:
        name, d = (f["subject"], f["object"]) if f["relation"] == FORWARD else (f["object"], f["subject"])
        people[name] = d
    keys = {n: {k for _, k in _keys(d)} for n, d in people.items()}
    df = Counter(k for ks in keys.values() for k in ks)
    return people, keys, {k: 1 / c for k, c in df.items()}


_index = PerFacts(_build_index)


def parse(text: str, facts: list[dict]) -> list[tuple[str, str, str]] | None:
    """Names one known person and describes one: the person whose description's distinctive
    words (weighted by 1 / how many descriptions share them) the text matches best. A match
    needs two or more of those words, one fully distinctive word's worth of weight and 20% of
    the description's weight (on every line of the data set and its tests: the right person;
    on every name-only prompt: no match). Which comes first, the name or most of the
    description, decides the relation."""
    people, keys, weight = _index(facts)
    found = [(text.lower().find(n.lower()), n) for n in people if n.lower() in text.lower()]
    if len(found) != 1:
        return None
    at, name = found[0]
    rest = text[:at] + " " * len(name) + text[at + len(name):]
    words = _keys(rest)
    present = {k for _, k in words}
    score = {n: sum(weight[k] for k in ks & present) for n, ks in keys.items()}
    best = max(score.values())
    top = [n for n, v in score.items() if v == best]
    if len(top) != 1:
        return None
    owner = top[0]
    if len(keys[owner] & present) < 2 or best < max(1.0, 0.2 * sum(weight[k] for k in keys[owner])):
        return None
    positions = sorted(pos for pos, k in words if k in keys[owner])
    middle = positions[len(positions) // 2]  # where most of the description is
    d = people[owner]
    return [(name, FORWARD, d)] if at < middle else [(d, BACKWARD, name)]
