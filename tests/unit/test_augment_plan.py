import pytest

from pipeline.augment.config import AugmentConfig
from pipeline.augment.plan import PromptTooLong, fingerprint, make_shards, pack_groups, plan_global, plan_local
from pipeline.augment.prompts import PromptFormat, global_messages, local_messages

from test_augment_prompts import FakeTokenizer

FMT = PromptFormat(FakeTokenizer())
BASE = FMT.count(FMT.render_split(global_messages([], "x", split_marker=True))[0])  # template tokens


def doc(i, text, world="w"):
    return {"doc_id": f"{world}-{i:03d}", "world": world, "text": text, "origin": "train"}


DOCS = [doc(i, f"Femp{i} are bigger than glon{i}. Yomp are red.") for i in range(10)] + [doc(0, "Troff are blue.", world="v")]


def cfg(**kw):
    return AugmentConfig(**kw)


def test_local_prompts_one_per_distinct_sentence_and_sample():
    reqs, prefixes, skipped = plan_local(DOCS, FMT, cfg(max_sentences_per_world=None, samples_per_sentence=2, temperature=0.7), 10_000, seed=0)
    w = [r for r in reqs if r["world"] == "w"]
    assert len(w) == 2 * 11  # 10 distinct "Femp<i>" sentences + "Yomp are red." once, 2 samples each
    assert len({r["request_id"] for r in reqs}) == len(reqs)
    yomp = [r for r in w if r["source_text"] == "Yomp are red."]
    assert {r["source_doc_id"] for r in yomp} == {"w-000"}  # the first document that states it
    assert len({r["seed"] for r in yomp}) == 2  # each sample its own seed
    assert skipped == {"local/v": {}, "local/w": {}}
    # one shared prefix (the worked examples); each prompt is the rest, ending with its sentence
    assert list(prefixes) == ["local"] and {r["prefix_key"] for r in reqs} == {"local"}
    whole = FMT.render(local_messages("Yomp are red."))
    assert prefixes["local"] + yomp[0]["prompt"] == whole and "Yomp" not in prefixes["local"]


def test_local_cap_is_a_seeded_sample():
    a, _, _ = plan_local(DOCS, FMT, cfg(max_sentences_per_world=4), 10_000, seed=1)
    b, _, _ = plan_local(DOCS, FMT, cfg(max_sentences_per_world=4), 10_000, seed=1)
    c, _, _ = plan_local(DOCS, FMT, cfg(max_sentences_per_world=4), 10_000, seed=2)
    assert a == b and [r["source_text"] for r in a] != [r["source_text"] for r in c]
    assert sum(r["world"] == "w" for r in a) == 4


def test_local_prompt_over_the_window_is_skipped_and_counted_or_strict_error():
    long_doc = doc(99, "Femp " + "very " * 300 + "big.")
    window = FMT.count(FMT.render(local_messages("Yomp are red."))) + 60  # room for 48 new tokens
    reqs, _, skipped = plan_local([doc(1, "Yomp are red."), long_doc], FMT, cfg(), window, seed=0)
    assert [r["source_text"] for r in reqs] == ["Yomp are red."]
    assert skipped["local/w"] == {"too_long": 1}
    with pytest.raises(PromptTooLong, match="w-099"):
        plan_local([long_doc], FMT, cfg(strict=True), window, seed=0)


def test_pack_groups():
    assert pack_groups([3, 3, 3, 3], limit=7, max_docs=None) == [[0, 1], [2, 3]]
    assert pack_groups([3, 3, 3], limit=100, max_docs=2) == [[0, 1], [2]]
    assert pack_groups([9, 1], limit=5, max_docs=None) == [[0], [1]]  # an oversized doc stands alone


def test_global_whole_corpus_is_one_prefix_when_it_fits():
    reqs, prefixes, _ = plan_global(DOCS, FMT, cfg(max_docs_per_world=None, global_prefix_max_tokens=None), 10_000, seed=0)
    w = [r for r in reqs if r["world"] == "w"]
    assert len(w) == 10 and {r["prefix_key"] for r in w} == {"w/g000"}
    assert all(d["text"] in prefixes["w/g000"] for d in DOCS if d["world"] == "w")
    assert all(r["prompt"].startswith("Target document:\n" + r["source_text"]) for r in w)


def test_global_corpus_beyond_the_budget_is_split_into_groups_and_targets_taken_group_by_group():
    budget = BASE + 30  # whitespace tokens: the template, plus three documents of 9 tokens
    reqs, prefixes, skipped = plan_global(DOCS, FMT, cfg(max_docs_per_world=3, global_prefix_max_tokens=budget), 10_000, seed=0)
    w = [r for r in reqs if r["world"] == "w"]
    w_groups = [k for k in prefixes if k.startswith("w/")]
    assert len(w) == 3 and len({r["prefix_key"] for r in w}) == 1  # one group's prefix serves the capped targets
    for r in w:
        assert FMT.count(prefixes[r["prefix_key"]]) <= budget
        assert r["source_text"] in prefixes[r["prefix_key"]]  # the target's own group
    all_reqs, all_prefixes, _ = plan_global(DOCS, FMT, cfg(max_docs_per_world=None, global_prefix_max_tokens=budget), 10_000, seed=0)
    assert len([k for k in all_prefixes if k.startswith("w/")]) > 1 and len(w_groups) == 1
    assert len([r for r in all_reqs if r["world"] == "w"]) == 10


def test_global_doc_too_long_for_the_window_is_skipped_or_strict_error():
    big = doc(50, "Femp " + "very " * 500 + "big.")
    docs = [doc(1, "Yomp are red."), big]
    reqs, _, skipped = plan_global(docs, FMT, cfg(), window=300, seed=0)
    assert [r["source_doc_id"] for r in reqs] == ["w-001"]
    assert skipped["global/w"] == {"too_long": 1}
    with pytest.raises(PromptTooLong, match="w-050"):
        plan_global(docs, FMT, cfg(strict=True), window=300, seed=0)


def test_shards_never_mix_groups_and_fingerprint_tracks_prompts():
    reqs, prefixes, _ = plan_global(DOCS, FMT, cfg(max_docs_per_world=None, global_prefix_max_tokens=BASE + 30), 10_000, seed=0)
    assert len(prefixes) > 2
    local, local_prefix, _ = plan_local(DOCS, FMT, cfg(max_sentences_per_world=None), 10_000, seed=0)
    prefixes.update(local_prefix)
    shards = make_shards(local + reqs, prefixes, shard_size=3)
    assert sum(len(s["requests"]) for s in shards) == len(local) + len(reqs)
    assert len({s["shard"] for s in shards}) == len(shards)
    for s in shards:
        assert 1 <= len(s["requests"]) <= 3
        assert len({(r["strategy"], r["world"], r["prefix_key"]) for r in s["requests"]}) == 1
        assert s["prefix"] == prefixes[s["prefix_key"]]
    settings = {"generator": "x"}
    changed = make_shards([dict(local[0], prompt=local[0]["prompt"] + " ")] + local[1:] + reqs, prefixes, 3)
    assert fingerprint(shards, settings) == fingerprint(make_shards(local + reqs, prefixes, 3), settings)
    assert fingerprint(shards, settings) != fingerprint(changed, settings)
    assert fingerprint(shards, settings) != fingerprint(shards, {"generator": "y"})


def test_config_rejects_many_greedy_samples():
    with pytest.raises(ValueError, match="augment.samples_per_sentence"):
        AugmentConfig(samples_per_sentence=3)
    with pytest.raises(ValueError, match="augment.samples_per_doc"):
        AugmentConfig(samples_per_doc=2, temperature=0)
    with pytest.raises(ValueError, match="augment.engine"):
        AugmentConfig(engine="vllm", device="cpu")
    assert AugmentConfig(samples_per_sentence=3, temperature=0.8).samples_per_sentence == 3


def test_computed_tokens_count_each_shared_prefix_once_per_strategy():
    from pipeline.augment.stage import computed_tokens

    gens = [{"strategy": "local", "prefix_key": "L", "prompt_tokens": 100 + k, "new_tokens": 10} for k in range(3)]
    gens += [{"strategy": "global", "prefix_key": f"G{k % 2}", "prompt_tokens": 500 + 7 * (k % 2) + 5, "new_tokens": 20}
             for k in range(4)]
    prefixes = {"L": 100, "G0": 500, "G1": 507}
    # local: the prefix once (100) + own tokens 0, 1, 2 + 3 x 10 generated
    # global: two prefixes (500 + 507) + 4 x 5 own tokens + 4 x 20 generated
    assert computed_tokens(gens, prefixes) == {"local": 100 + 3 + 30, "global": 1007 + 20 + 80}
