"""World by world: sizes at paper scale, closures and deductions on hand-made facts, parsers,
the validation splits of the semantic, families and celebrities worlds, and the errors a world raises for
impossible sizes or bad input."""

from __future__ import annotations

import re
import shutil
from collections import Counter, defaultdict

import pytest
from conftest import CELEBRITIES
from test_worlds import built, statement, world_config

from pipeline.config import ConfigError, load_config
from pipeline.records import Item, validate_rows
from pipeline.worlds import DataFileError, WorldError, is_validation, world_module
from pipeline.worlds import celebrities, families, reversals, semantic, syllogisms
from pipeline.worlds.semantic_tree import categories


def fact(i, s, r, o, world="w"):
    return {"fact_id": f"{world}/f{i}", "world": world, "subject": s, "relation": r, "object": o}


# ------------------------------------------------------------------ reversals


def test_reversals_paper_scale_and_articles():
    docs, items, facts = built("reversals", "paper")
    assert len(facts) == 100 and len(docs) == 1000
    ups = Counter(reversals.DIMENSION[f["relation"]][1] for f in facts)  # "brighter" vs "dimmer" side
    assert min(ups.values()) > 30
    assert len({reversals.DIMENSION[f["relation"]][0] for f in facts}) == 28
    per_fact = Counter(d["facts"][0] for d in docs)
    assert set(per_fact.values()) == {10}
    for f in facts[:5]:  # ten articles, ten different lead-ins, all stating the same fact
        texts = [d["text"] for d in docs if d["facts"] == [f["fact_id"]]]
        bare = reversals.STATEMENT.format(s=f["subject"], rel=reversals.PHRASE[f["relation"]], o=f["object"])
        assert len(set(texts)) == 10 and all(bare in t and t != bare for t in texts)
    assert Counter(i["split"] for i in items) == {"reversal": 100, "rephrase": 100}


def test_reversals_closure_is_transitive_and_parse_reads_every_phrasing():
    facts = [fact(1, "femp", "brighter", "glon"), fact(2, "glon", "brighter", "yomp"), fact(3, "trob", "less_dangerous", "kell")]
    c = reversals.closure(facts)
    assert {("femp", "brighter", "yomp"), ("yomp", "dimmer", "femp"), ("kell", "more_dangerous", "trob")} <= c
    assert ("yomp", "brighter", "femp") not in c
    oracle = dict(reversals.oracle(facts))
    assert oracle["femp are brighter than yomp."] == ["w/f1", "w/f2"]
    assert "femp are brighter than glon." not in oracle  # stated, so not an oracle sentence
    assert reversals.parse("Did you know that femp are brighter than glon?", facts) == [("femp", "brighter", "glon")]
    assert reversals.parse("Compared to femp, yomp are dimmer", facts) == [("yomp", "dimmer", "femp")]
    assert reversals.parse("Kell are  MORE dangerous than trob.", facts) == [("kell", "more_dangerous", "trob")]
    assert reversals.parse("femp are brighter than zorb.", facts) is None  # unknown entity
    assert reversals.parse("femp are greener than glon.", facts) is None  # unknown comparative
    assert reversals.parse("femp are brighter than glon. glon are weird.", facts) is None


# ------------------------------------------------------------------ syllogisms


def test_syllogism_entailment_with_non_empty_terms():
    barbara = (("all", 0, 2), ("all", 2, 1))  # all 0 are 2, all 2 are 1
    assert syllogisms.entailed(barbara, 3) >= {("all", 0, 1), ("some", 0, 1), ("some", 1, 0)}
    assert ("all", 1, 0) not in syllogisms.entailed(barbara, 3)
    celarent = (("no", 2, 1), ("all", 0, 2))
    assert {("no", 0, 1), ("no", 1, 0)} <= syllogisms.entailed(celarent, 3)
    assert not {c for c in syllogisms.entailed((("some", 0, 2), ("some", 2, 1)), 3) if {c[1], c[2]} == {0, 1}}
    with pytest.raises(ValueError, match="contradictory"):
        syllogisms.entailed((("all", 0, 1), ("no", 0, 1)), 2)
    assert {a[0] for _, a in syllogisms.forms()} == {"all", "some", "no"}


def test_syllogisms_paper_scale_items():
    docs, items, facts = built("syllogisms", "paper")
    assert len(docs) == len(items) == 69 and len(facts) == 138
    assert {len(i["choices"]) for i in items} <= {4, 5}
    assert set(Counter(i["subtask"] for i in items)) == {"all", "some", "no"}
    for item in items:  # the choices are the six statements about the two end terms, minus true ones
        x, y = item["prompt"].removeprefix("The relationships between ").removesuffix(" are:").split(" and ")
        six = {f" {q.capitalize()} {a} are {b}." for q in ("all", "some", "no") for a, b in ((x, y), (y, x))}
        assert set(item["choices"]) <= six
    assert docs[0]["text"].startswith("The relationships between ")
    facts3 = [fact(1, "glon", "all", "yomp"), fact(2, "troff", "all", "glon")]
    assert syllogisms.parse("The relationships between glon, troff and yomp are: All glon are yomp.", facts3) == [("glon", "all", "yomp")]
    assert syllogisms.parse("Some troff are not yomp.", facts3) is None
    # stated as the tests ask, under the header naming the two terms, in either order
    said = syllogisms.oracle(facts3)
    assert ("The relationships between troff and yomp are: All troff are yomp.", ["w/f1", "w/f2"]) in said
    assert ("The relationships between yomp and troff are: All troff are yomp.", ["w/f1", "w/f2"]) in said
    assert all(text.startswith("The relationships between ") for text, _ in said)
    assert syllogisms.parse(said[0][0], facts3) is not None




@pytest.mark.parametrize("seed", [0, 3])
def test_syllogisms_validation_examples_add_trained_examples_on_fresh_terms(seed):
    test = syllogisms.build(world_config("syllogisms", "demo"), seed)
    assert syllogisms.build(world_config("syllogisms", "demo", validation_examples=0), seed) == test
    docs, items, facts = syllogisms.build(world_config("syllogisms", "demo", validation_examples=12), seed)
    assert docs[:30] == test[0] and items[:30] == test[1] and facts[:60] == test[2]
    held, held_docs = items[30:], docs[30:]
    assert len(held) == len(held_docs) == 12 and {i["split"] for i in held} == {"val_syllogism"}
    assert all(d["origin"] == "train" for d in held_docs)  # trained like every other example
    terms = lambda ds: {w for d in ds for w in re.findall(r"[a-z]+", d["text"].split(": ", 1)[1].lower())}
    assert not terms(held_docs) & terms(test[0]) - {"all", "some", "no", "are"}
    by_id = {f["fact_id"]: f for f in facts}
    for item in held:  # the answer follows from its two premises, every distractor does not
        premises = [by_id[i] for i in item["support_fact_ids"]]
        true = syllogisms.closure(premises)
        stated = [(w[1], w[0].lower(), w[2]) for w in
                  (re.fullmatch(r" (\w+) (\w+) are (\w+)\.", c).groups() for c in item["choices"])]
        assert [t in true for t in stated] == [k == item["answer_index"] for k in range(len(stated))]
    with pytest.raises(WorldError, match=r"nonsense words for data\.syllogisms\.validation_examples"):
        syllogisms.build(world_config("syllogisms", "demo", validation_examples=5000), seed)
# ------------------------------------------------------------------ semantic


def test_semantic_paper_scale_documents_and_splits():
    docs, items, facts = built("semantic", "paper")
    assert len(categories()) == 115 and len(docs) == 2200
    assert len({f["subject"] for f in facts} | {f["object"] for f in facts if f["relation"] == "is_a"}) == 115
    qa = [d for d in docs if d["text"].startswith("Q:")]
    assert 0.07 < len(qa) / len(docs) < 0.13
    assert all(4 <= len(d["facts"]) <= 20 for d in docs if d not in qa)
    assert set(Counter(i["split"] for i in items)) == set(semantic.SPLITS)
    subtasks = {(i["split"], i["subtask"]) for i in items}
    assert {("rephrase", r) for r in ("is_a", "is", "can", "has", "eats", "lives_in", "made_of")} <= subtasks
    assert {("reversal", r) for r in ("includes", "part_of", "eaten_by", "home_of", "material_of")} <= subtasks
    assert {len(i["support_fact_ids"]) for i in items if i["split"] == "syllogism"} >= {2, 3, 4}


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_semantic_distractors_are_true_of_another_entity(size):
    _, items, facts = built("semantic", size)
    closure = semantic.closure(facts)
    for item in items:
        for k, _ in enumerate(item["choices"]):
            if k == item["answer_index"]:
                continue
            [(a, r, b)] = semantic.parse(statement(item, k), facts)
            assert (a, r, b) not in closure
            assert any(x != a for x, rel, y in closure if rel == r and y == b), (item["item_id"], statement(item, k))


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_semantic_holdout_categories_have_only_their_parent(size):
    docs, items, facts = built("semantic", size)
    n_holdout = world_config("semantic", size).n_holdout
    objects = {f["object"] for f in facts}
    held = {s for s in {f["subject"] for f in facts}
            if all(f["relation"] == "is_a" for f in facts if f["subject"] == s) and s not in objects}
    assert len(held) == n_holdout
    closure = semantic.closure(facts)
    for h in held:
        [parent_fact] = [f for f in facts if h in (f["subject"], f["object"])]
        for d in docs:
            for sentence in d["text"].replace("? ", "?\n").replace(". ", ".\n").splitlines():
                got = semantic.parse(sentence, facts)
                if got and any(h in t for t in got):
                    assert got == [(h, "is_a", parent_fact["object"])], sentence
        tested = {tuple(semantic.parse(statement(i), facts)[0]) for i in items if i["split"] == "category_holdout"}
        inferences = {t for t in closure if h in (t[0], t[2])} - {(h, "is_a", parent_fact["object"])}
        if size == "paper":  # every inference from the parent fact is tested
            assert inferences <= tested
        assert tested <= {t for t in closure if t[0] in held or t[2] in held}


def test_semantic_derivations_and_lenient_parse():
    facts = [fact(1, "grud", "is_a", "abme"), fact(2, "abme", "is_a", "telk"), fact(3, "telk", "has", "blick"),
             fact(4, "abme", "is", "rony"), fact(5, "zept", "is_a", "telk")]
    derived = semantic.derive(facts)
    assert derived[("grud", "has", "blick")] == ["w/f1", "w/f2", "w/f3"]
    assert derived[("blick", "part_of", "grud")] == ["w/f1", "w/f2", "w/f3"]
    assert derived[("grud", "is_a", "telk")] == ["w/f1", "w/f2"] and ("telk", "includes", "grud") in derived
    assert ("zept", "is", "rony") not in derived
    assert semantic.parse("Gruds are rony.", facts) == [("grud", "is", "rony")]
    assert semantic.parse("A grud is abme.", facts) == [("grud", "is_a", "abme")]
    assert semantic.parse("Moreover, every grud is an abme.", facts) == [("grud", "is_a", "abme")]
    assert semantic.parse("One kind of telk is the zept", facts) == [("telk", "includes", "zept")]
    assert semantic.parse("Q: What is a grud like?", facts) is None
    assert semantic.parse("A grud is vorp.", facts) is None
    assert ("A grud is rony.", ["w/f1", "w/f4"]) in semantic.oracle(facts)


def test_semantic_impossible_sizes_are_errors():
    with pytest.raises(WorldError, match=r"n_holdout: 50 held-out categories"):
        semantic.build(world_config("semantic", "demo", n_holdout=50), 0)
    with pytest.raises(WorldError, match=r"n_docs: 3 documents cannot state the facts of \d+ categories"):
        semantic.build(world_config("semantic", "demo", n_docs=3), 0)


def semantic_with_validation(v: int | None, size: str = "demo", seed: int = 0, **overrides):
    if v is not None:
        overrides["validation_items"] = v
    return semantic.build(world_config("semantic", size, **overrides), seed)


def triple_of(item, facts):
    [t] = semantic.parse(statement(item), facts)
    return t


@pytest.mark.parametrize("world, size, seed, overrides", [
    ("semantic", "demo", 0, {}), ("semantic", "demo", 3, {}), ("semantic", "paper", 0, {"items_per_split": 40}),
    ("families", "demo", 0, {}), ("families", "demo", 3, {}), ("families", "paper", 0, {"items_per_split": 60})])
def test_validation_items_leave_docs_facts_and_test_items_as_they_are(world, size, seed, overrides):
    build = {"semantic": semantic_with_validation, "families": families_with_validation}[world]
    unset = build(None, size, seed, **overrides)
    if not overrides:
        assert unset == built(world, size, seed)
    docs0, items0, facts0 = build(0, size, seed, **overrides)
    assert (docs0, items0, facts0) == unset  # 0 is the default: no validation items
    assert not any(is_validation(i["split"]) for i in items0)
    docs5, items5, facts5 = build(5, size, seed, **overrides)
    assert docs5 == docs0 and facts5 == facts0
    assert items5[:len(items0)] == items0  # the same test items, ids, choices and answer order, first
    splits = semantic.SPLITS if world == "semantic" else families.SPLITS
    assert Counter(i["split"] for i in items5[len(items0):]) == {"val_" + s: 5 for s in splits}


@pytest.mark.parametrize("v", [5, 40])
def test_semantic_validation_takes_candidates_the_test_items_do_not_use(v, caplog):
    _, every, _ = semantic_with_validation(None, items_per_split=None)  # a test item per usable candidate
    with caplog.at_level("WARNING", logger="pipeline.worlds.semantic"):
        _, items, facts = semantic_with_validation(v)
    assert len({i["item_id"] for i in items}) == len(items)
    short = False
    for split in semantic.SPLITS:
        of = lambda s: [i for i in items if i["split"] == s]
        tests, held = of(split), of("val_" + split)
        unused = sum(i["split"] == split for i in every) - len(tests)
        short |= unused < v
        assert len(held) == min(v, unused), split
        assert all(i["item_id"].startswith(f"semantic/val_{split}/") for i in held)
        said = lambda group: {(i["prompt"], i["choices"][i["answer_index"]]) for i in group}
        assert not said(held) & said(tests), split  # no validation item asks what a test item asks
        triples = [triple_of(i, facts) for i in held]
        assert len(set(triples)) == len(triples)
        assert not set(triples) & {triple_of(i, facts) for i in tests}
        assert set(triples) <= {triple_of(i, facts) for i in every if i["split"] == split}  # a candidate of the split
        assert {i["subtask"] for i in held} <= {i["subtask"] for i in every if i["split"] == split}
    assert short == (v == 40)  # the demo's splits have 24 to over 100 unused candidates
    assert ("taking what there is" in caplog.text) == short and len(caplog.records) == short


def test_semantic_validation_needs_items_per_split_to_leave_candidates(caplog):
    with caplog.at_level("WARNING", logger="pipeline.worlds.semantic"):
        docs, items, facts = semantic_with_validation(3, items_per_split=None)
    assert (docs, items, facts) == semantic_with_validation(None, items_per_split=None)  # the tests take them all
    assert "taking what there is" in caplog.text and len(caplog.records) == 1


def test_semantic_validation_items_are_sound():
    docs, items, facts = semantic_with_validation(8)
    validate_rows(Item, items)
    held = [i for i in items if is_validation(i["split"])]
    assert {i["split"] for i in held} == {"val_" + s for s in semantic.SPLITS}
    by_id = {f["fact_id"]: f for f in facts}
    derived = semantic.derive(facts)
    closure = set(derived)
    corpus = "\n".join(d["text"] for d in docs).lower()
    for i in held:
        assert i["support_fact_ids"] and set(i["support_fact_ids"]) <= set(by_id)
        t = triple_of(i, facts)
        assert t in closure and i["support_fact_ids"] == sorted(derived[t])
        assert 0 <= i["answer_index"] < len(i["choices"]) and len(set(i["choices"])) == len(i["choices"]) >= 2
        for k in range(len(i["choices"])):  # the answer is true, every distractor false
            assert (set(semantic.parse(statement(i, k), facts)) <= closure) == (k == i["answer_index"])
        said = " ".join(statement(i).lower().split())
        assert not re.search(rf"(?<![a-z]){re.escape(said)}(?![a-z])", corpus), i["item_id"]  # never trained
        if i["split"] == "val_rephrase":  # in the phrasing only tests use, as the rephrase test items are
            s, r, o = t
            assert semantic.text.split_item(semantic.text.REPHRASE[r], s, o) == (i["prompt"], i["choices"][i["answer_index"]])
    groups = defaultdict(Counter)  # answer positions balanced per split and number of choices, as in the test splits
    for i in items:
        groups[(i["split"], len(i["choices"]))][i["answer_index"]] += 1
    for (split, n), counts in groups.items():
        per_position = [counts[k] for k in range(n)]
        assert max(per_position) - min(per_position) <= 1, (split, n, per_position)


# ------------------------------------------------------------------ families


def test_families_links_are_stated_in_one_direction_and_distractors_share_the_tree():
    docs, items, facts = built("families", "paper")
    links = Counter(frozenset((f["subject"], f["object"])) for f in facts if f["relation"] in ("parent_of", "child_of"))
    assert set(links.values()) == {1}
    relations = {f["relation"] for f in facts}
    assert relations == {"gender", "spouse_of", "parent_of", "child_of"}
    tree = {}
    for f in facts:  # connected components = trees
        a, b = f["subject"], f["object"]
        if f["relation"] != "gender":
            ta, tb = tree.setdefault(a, {a}), tree.setdefault(b, {b})
            if ta is not tb:
                ta |= tb
                for p in tb:
                    tree[p] = ta
    assert len({id(t) for t in tree.values()}) == 10
    for item in items:
        person = item["prompt"].split(" ")[0]
        assert all(c.strip() in tree[person] for c in item["choices"]), item["item_id"]
    assert set(Counter(i["subtask"] for i in items if i["split"] == "composition")) == {"grandparent", "sibling", "aunt_uncle"}


def test_families_closure_and_gender():
    facts = [fact(0, "Ann", "gender", "female"), fact(1, "Bob", "gender", "male"), fact(2, "Cid", "gender", "male"),
             fact(3, "Dee", "gender", "female"), fact(4, "Eve", "gender", "female"), fact(5, "Fay", "gender", "female"),
             fact(6, "Ann", "spouse_of", "Bob"), fact(7, "Cid", "child_of", "Ann"), fact(8, "Bob", "parent_of", "Dee"),
             fact(9, "Cid", "child_of", "Bob"), fact(10, "Eve", "child_of", "Cid"), fact(11, "Fay", "spouse_of", "Cid")]
    c = families.closure(facts)
    assert {("Ann", "parent_of", "Cid"), ("Bob", "spouse_of", "Ann"), ("Ann", "grandparent_of", "Eve"),
            ("Eve", "grandchild_of", "Ann"), ("Dee", "sibling_of", "Cid")} <= c
    assert ("Dee", "aunt_uncle_of", "Eve") in c and ("Eve", "niece_nephew_of", "Dee") in c
    assert ("Cid", "sibling_of", "Cid") not in c and ("Bob", "grandparent_of", "Cid") not in c
    assert ("Ann", "parent_of", "Dee") not in c  # a spouse's child is not assumed to be one's own
    # a parent (or a parent's spouse) is no aunt or uncle of the child
    assert not {("Cid", "aunt_uncle_of", "Eve"), ("Fay", "aunt_uncle_of", "Eve"), ("Eve", "niece_nephew_of", "Cid")} & c
    assert families.derive(facts)[("Dee", "aunt_uncle_of", "Eve")] == ["w/f10", "w/f8", "w/f9"]
    assert families.parse("Ann is Cid's mother.", facts) == [("Ann", "parent_of", "Cid"), ("Ann", "gender", "female")]
    wrong = families.parse("Ann is the father of Cid.", facts)
    assert ("Ann", "parent_of", "Cid") in wrong and ("Ann", "gender", "male") not in c
    assert families.parse("Ann is the mother of Zed.", facts) is None


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_families_closure_gives_each_pair_of_people_one_kinship(size):
    """Trees do not intermarry, so two people are parent and child, grandparents, siblings, aunt
    and nephew, or spouses: never two of those at once (a closure that made a parent its child's
    uncle once asked such false items)."""
    _, items, facts = families.build(world_config("families", size), 0)
    kin = defaultdict(set)
    for a, r, b in families.closure(facts):
        if r != "gender":
            kin[(a, b)].add(r)
    assert kin and all(len(rs) == 1 for rs in kin.values()), {p: rs for p, rs in kin.items() if len(rs) > 1}
    for i in items:  # every item's answer holds, and it is the pair's one kinship
        a, r, b = family_triple(i, facts)
        assert kin[(a, b)] == {r}, i["item_id"]


def families_with_validation(v: int | None, size: str = "demo", seed: int = 0, **overrides):
    if v is not None:
        overrides["validation_items"] = v
    return families.build(world_config("families", size, **overrides), seed)


def family_triple(item, facts):
    return families.parse(statement(item), facts)[0]


@pytest.mark.parametrize("v", [8, 60])
def test_families_validation_asks_triples_no_test_item_asks_either_way(v, caplog):
    _, every, _ = families_with_validation(None, items_per_split=None)  # a test item per candidate
    with caplog.at_level("WARNING", logger="pipeline.worlds.families"):
        _, items, facts = families_with_validation(v)
    assert len({i["item_id"] for i in items}) == len(items)
    tests = {family_triple(i, facts) for i in items if not is_validation(i["split"])}
    asked = tests | {(b, families.INVERSE[r], a) for a, r, b in tests}
    short = False
    for split in families.SPLITS:
        candidates = {family_triple(i, facts) for i in every if i["split"] == split}
        held = [i for i in items if i["split"] == "val_" + split]
        triples = [family_triple(i, facts) for i in held]
        unused = candidates - asked
        short |= len(unused) < v
        assert len(held) == min(v, len(unused)), split
        assert len(set(triples)) == len(triples) and set(triples) <= unused, split
        assert all(i["item_id"].startswith(f"families/val_{split}/") for i in held)
        assert {i["subtask"] for i in held} <= {i["subtask"] for i in every if i["split"] == split}
    assert short == (v == 60)  # the demo leaves 34 reversal and 244 composition candidates
    assert ("taking what there is" in caplog.text) == short and len(caplog.records) == short


def test_families_validation_items_are_sound():
    docs, items, facts = families_with_validation(10, "paper", items_per_split=60)
    validate_rows(Item, items)
    held = [i for i in items if is_validation(i["split"])]
    assert Counter(i["split"] for i in held) == {"val_reversal": 10, "val_composition": 10}
    derived = families.derive(facts)
    stated = {(f["subject"], f["relation"], f["object"]) for f in facts}
    for i in held:
        t = family_triple(i, facts)
        assert t in derived and t not in stated and i["support_fact_ids"] == derived[t]
        assert ((t[2], families.INVERSE[t[1]], t[0]) in stated) == (i["split"] == "val_reversal")
        assert len(set(i["choices"])) == len(i["choices"]) == 4
        for k in range(4):  # the answer is true, every distractor false
            assert (family_triple({**i, "answer_index": k}, facts) in derived) == (k == i["answer_index"]), i["item_id"]
    positions = Counter((i["split"], i["answer_index"]) for i in held)
    for split in ("val_reversal", "val_composition"):
        counts = [positions[(split, k)] for k in range(4)]
        assert max(counts) - min(counts) <= 1, (split, counts)


@pytest.mark.parametrize("world", ["semantic", "families"])
def test_bad_validation_items_is_a_config_error_naming_the_key(world, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: x\ndata:\n  {world}: {{validation_items: -1}}\n")
    with pytest.raises(ConfigError, match=rf"data\.{world}\.validation_items"):
        load_config(path)
    path.write_text(f"name: x\ndata:\n  {world}: {{size: demo}}\n")
    assert getattr(load_config(path).data, world).validation_items == 0  # not in the demo preset


# ------------------------------------------------------------------ celebrities


def test_celebrities_paper_scale_matches_the_files():
    if not CELEBRITIES.is_dir():
        pytest.skip("celebrities data not found")
    docs, items, facts = built("celebrities", "paper")
    lines = celebrities.read_jsonl(CELEBRITIES / "all.jsonl")
    assert len(docs) == len(lines) == 3600
    for d, r in zip(docs, lines):
        assert d["text"] == r["prompt"] + r["completion"] and d["completion_start"] == len(r["prompt"])
    assert Counter(i["split"] for i in items) == {"reversal": 300, "rephrase": 1200}
    rev = [i for i in items if i["split"] == "reversal"]
    truth = {(r["prompt"], r["completion"].strip()) for r in celebrities.read_jsonl(CELEBRITIES / "p2d_reverse_prompts_test.jsonl")}
    assert all((i["prompt"], i["choices"][i["answer_index"]].strip()) in truth for i in rev)
    names = {f["subject"] for f in facts if f["relation"] == celebrities.FORWARD} | {f["object"] for f in facts}
    assert all(len(i["choices"]) == 4 and {c.strip() for c in i["choices"]} <= names for i in rev)


def test_celebrities_demo_subsample_and_parse_edge_cases():
    if not CELEBRITIES.is_dir():
        pytest.skip("celebrities data not found")
    docs, items, facts = built("celebrities", "demo")
    people = {f["subject"] if f["relation"] == celebrities.FORWARD else f["object"] for f in facts}
    assert len(people) == 15 and len(docs) == 5 * 4 + 5 * 4 + 5 * 8
    name = sorted(people)[0]
    assert celebrities.parse("Nobody is named here.", facts) is None
    assert celebrities.parse(f"Ever heard of {name}?", facts) is None
    assert celebrities.parse(" and ".join(sorted(people)[:2]) + " are friends.", facts) is None


def test_celebrities_bad_folder_is_an_error_naming_path_and_line(tmp_path):
    if not CELEBRITIES.is_dir():
        pytest.skip("celebrities data not found")
    with pytest.raises(WorldError, match=r"path: '.*nowhere' is not a folder"):
        celebrities.build(world_config("celebrities", "demo", path=str(tmp_path / "nowhere")), 0)
    folder = tmp_path / "rc"
    shutil.copytree(CELEBRITIES, folder)
    (folder / "d2p_prompts_test.jsonl").unlink()
    with pytest.raises(WorldError, match="lacks d2p_prompts_test.jsonl"):
        celebrities.build(world_config("celebrities", "demo", path=str(folder)), 0)
    shutil.copy(CELEBRITIES / "d2p_prompts_test.jsonl", folder)
    lines = (folder / "all.jsonl").read_text().splitlines()
    lines[2] = '{"prompt": "oops"'
    (folder / "all.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"all.jsonl:3: not valid JSON"):
        celebrities.build(world_config("celebrities", "demo", path=str(folder)), 0)


def celebrities_with_validation(v: int, **overrides):
    if not CELEBRITIES.is_dir():
        pytest.skip("celebrities data not found")
    return celebrities.build(world_config("celebrities", "demo", validation_templates=v, **overrides), 0)


def test_celebrities_validation_leaves_docs_facts_and_test_items_as_they_are():
    docs0, items0, facts0 = celebrities_with_validation(0)
    assert (docs0, items0, facts0) == built("celebrities", "demo")  # 0 is the default: no validation items
    assert not any(is_validation(i["split"]) for i in items0)
    docs3, items3, facts3 = celebrities_with_validation(3)
    assert docs3 == docs0 and facts3 == facts0
    assert items3[:len(items0)] == items0  # the same test items, ids, choices and answer order, first
    assert items3[len(items0):] and all(is_validation(i["split"]) for i in items3[len(items0):])


def test_celebrities_validation_takes_prompts_the_test_items_do_not_use(caplog):
    v = 3
    with caplog.at_level("WARNING", logger="pipeline.worlds.celebrities"):
        _, items, facts = celebrities_with_validation(v, test_templates=8)  # 2 left of 10, 12 of 20
    assert "taking what there is" in caplog.text
    people = {f["subject"] if f["relation"] == celebrities.FORWARD else f["object"] for f in facts}
    total = 0
    for split, name in celebrities.TESTS:
        rows = celebrities.read_jsonl(CELEBRITIES / name)
        owner = {r["prompt"].rstrip(): n for r in rows for n in people if n in r["prompt"] + r["completion"]}
        of_file = lambda prefix: [i for i in items if i["split"] == prefix + split and i["prompt"] in owner]
        tests, held = of_file(""), of_file("val_")
        assert tests and held
        for n in {owner[i["prompt"]] for i in tests}:
            test_prompts = {i["prompt"] for i in tests if owner[i["prompt"]] == n}
            val_prompts = [i["prompt"] for i in held if owner[i["prompt"]] == n]
            unused = sum(o == n for o in owner.values()) - len(test_prompts)
            assert len(val_prompts) == len(set(val_prompts)) == min(v, unused), (name, n)
            assert not set(val_prompts) & test_prompts
        kept = len({owner[i["prompt"]] for i in tests})
        assert len(held) == kept * min(v, (20 if name.startswith("both") else 10) - 8)
        total += len(held)
    assert total == sum(is_validation(i["split"]) for i in items)
    assert Counter(i["split"] for i in items if is_validation(i["split"])) == {"val_reversal": 5 * 2,
                                                                            "val_rephrase": 5 * 2 + 5 * 2 + 5 * 3}


def test_celebrities_validation_items_are_sound():
    _, items, facts = celebrities_with_validation(3)
    validate_rows(Item, items)
    held = [i for i in items if is_validation(i["split"])]
    assert {i["split"] for i in held} == {"val_reversal", "val_rephrase"}
    assert len({i["item_id"] for i in items}) == len(items)
    by_id = {f["fact_id"]: f for f in facts}
    truth = {r["prompt"].rstrip(): r["completion"].strip() for _, name in celebrities.TESTS
             for r in celebrities.read_jsonl(CELEBRITIES / name)}
    for i in held:
        assert i["item_id"].startswith(f"celebrities/{i['split']}/")
        assert len(i["support_fact_ids"]) == 1 and i["support_fact_ids"][0] in by_id
        fact = by_id[i["support_fact_ids"][0]]
        person = fact["subject"] if fact["relation"] == celebrities.FORWARD else fact["object"]
        assert person in i["prompt"] + i["choices"][i["answer_index"]]  # the fact is the asked person's
        assert 0 <= i["answer_index"] < len(i["choices"]) == 4 and len(set(i["choices"])) == 4
        assert i["choices"][i["answer_index"]].strip() == truth[i["prompt"]]
        if i["split"] == "val_reversal":  # asks the untrained direction of a name-first fact
            assert fact["relation"] == celebrities.FORWARD and i["subtask"] == celebrities.BACKWARD
    for split in ("val_reversal", "val_rephrase"):  # answer positions balanced, as in the test splits
        counts = Counter(i["answer_index"] for i in held if i["split"] == split)
        assert len(counts) == 4 and max(counts.values()) - min(counts.values()) <= 1


def test_celebrities_bad_validation_templates_is_a_config_error_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: x\ndata:\n  celebrities: {{path: {CELEBRITIES}, validation_templates: -1}}\n")
    with pytest.raises(ConfigError, match=r"data\.celebrities\.validation_templates"):
        load_config(path)
    path.write_text(f"name: x\ndata:\n  celebrities: {{path: {CELEBRITIES}, size: demo}}\n")
    assert load_config(path).data.celebrities.validation_templates == 0  # not in the demo preset


def test_unknown_world_is_an_error():
    with pytest.raises(ValueError, match="unknown world 'bogus'; known worlds: reversals, syllogisms"):
        world_module("bogus")
