"""The nonsense-word lexicon, sentence templates, answer balancing, and the data config."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from pipeline.config import ConfigError, validate_config
from pipeline.worlds.choices import balance_answers, sample_evenly
from pipeline.worlds.lexicon import SHARES, Lexicon, LexiconError, is_english, shares
from pipeline.worlds.templates import compile_template, normalise, parse_text


def test_lexicon_words_are_pronounceable_non_english_and_disjoint_across_worlds():
    pool = shares()
    assert set(pool) == set(SHARES)
    seen: set[str] = set()
    for world, words in pool.items():
        assert len(words) > 2000, world
        assert not seen & set(words)
        seen |= set(words)
    for w in seen:
        assert re.fullmatch(r"[a-z]{4,5}", w) and re.search(r"[aeiou]", w), w
        assert not re.search(r"(.)\1\1", w), w
    assert not any(is_english(w) for w in seen)
    assert is_english("table") and is_english("dogs") and is_english("glass") and not is_english("femp")


def test_lexicon_is_seeded_and_never_repeats_a_word():
    a, b, c = Lexicon("semantic", 0), Lexicon("semantic", 0), Lexicon("semantic", 1)
    first = a.take(50, "categories") + a.take(50, "adjectives")
    assert first == b.take(100, "anything")
    assert len(set(first)) == 100
    assert first[:50] != c.take(50, "categories")
    with pytest.raises(LexiconError, match=r"needs 100000 more nonsense words for names but only \d+ of \d+ are left"):
        a.take(100_000, "names")


def test_compile_template_slots_articles_and_repeats():
    p = compile_template("{A} {s} is {a} {o}")
    m = p.fullmatch("An  abme is a grud")
    assert m and (m["s"], m["o"]) == ("abme", "grud")
    assert p.fullmatch("The abme is a grud") is None
    assert compile_template("{x} likes {x}").fullmatch("femp likes femp")
    assert not compile_template("{x} likes {x}").fullmatch("femp likes glon")
    assert normalise("  Femp  are big?! ") == "Femp are big"


def test_parse_text_skips_questions_and_rejects_unknown_sentences():
    one = lambda s: [("a", "r", s.split()[0])] if s.startswith("x") else None
    assert parse_text("x1. x2.", one) == [("a", "r", "x1."), ("a", "r", "x2.")]
    assert parse_text("Q: what? x1.", one) == [("a", "r", "x1.")]
    assert parse_text("x1. y2.", one) is None
    assert parse_text("What is it?", one) is None


def test_balance_answers_spreads_positions_and_keeps_the_answer():
    items = [{"item_id": str(i), "split": "s", "choices": [f"right{i}", "w1", "w2", "w3"], "answer_index": 0}
             for i in range(22)]
    out = balance_answers(items, random.Random(0))
    counts = Counter(i["answer_index"] for i in out)
    assert sorted(counts.values()) == [5, 5, 6, 6]
    assert all(o["choices"][o["answer_index"]] == f"right{o['item_id']}" for o in out)
    assert all(sorted(o["choices"]) == sorted(i["choices"]) for o, i in zip(out, items))
    with pytest.raises(ValueError, match="correct choice first"):
        balance_answers([dict(items[0], answer_index=1)], random.Random(0))


def test_sample_evenly_takes_subtasks_in_turn():
    cands = [("a", i) for i in range(10)] + [("b", i) for i in range(2)] + [("c", i) for i in range(5)]
    got = sample_evenly(cands, lambda c: c[0], 7, random.Random(0))
    assert Counter(c[0] for c in got) == {"a": 3, "b": 2, "c": 2}
    assert len(sample_evenly(cands, lambda c: c[0], None, random.Random(0))) == 17


def test_data_config_presets_overrides_and_errors():
    cfg = validate_config({"name": "x", "data": {"reversals": {"size": "demo"}, "semantic": {"size": "paper"},
                                                 "families": {"n_trees": 3}}})
    assert (cfg.data.reversals.n_facts, cfg.data.reversals.articles_per_fact) == (20, 5)
    assert (cfg.data.semantic.n_docs, cfg.data.semantic.n_holdout, cfg.data.semantic.n_categories) == (2200, 10, None)
    assert (cfg.data.families.n_trees, cfg.data.families.docs_per_family) == (3, 2)  # demo preset, one override
    assert cfg.data.enabled() == ["reversals", "semantic", "families"]
    errors = {
        "data.reversals.n_facts: Input should be greater than 0": {"reversals": {"n_facts": 0}},
        "data.celebrities.path: required key is missing": {"celebrities": {"size": "demo"}},
        "data.reversal: unknown key; did you mean 'reversals'?": {"reversal": {}},
        "data.semantic: min_sentences: 30 is more than max_sentences 8": {"semantic": {"min_sentences": 30}},
        "data.corpus.path: required key is missing": {"corpus": {}},
    }
    for message, data in errors.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_config({"name": "x", "data": data})
