"""Training examples and the step plan: pure functions, no Ray, no model weights."""

from collections import Counter

import pytest

from pipeline.train.batches import PlanError, padding_share, plan_rows, plan_steps
from pipeline.train.examples import (
    IGNORE, Example, ExampleError, build_examples, condition_docs, doc_examples, loss_tokens,
    tokenize_example, tokenize_examples,
)

WORDS = "femp glon yomp troff zept telk brix quor dask vimp".split()


def doc(doc_id, text, origin="train", start=0):
    return {"doc_id": doc_id, "world": "w", "text": text, "origin": origin, "completion_start": start}


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from pipeline.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def test_condition_docs_take_train_docs_plus_their_strategies_only():
    train = [doc("t1", "Femp are big."), doc("t2", "Glon are small.")]
    aug = [doc("l1", "Big are femp.", "augment:local"), doc("g1", "Femp outsize glon.", "augment:global")]
    assert [d["doc_id"] for d in condition_docs("ft", train, aug)] == ["t1", "t2"]
    assert [d["doc_id"] for d in condition_docs("ft+local", train, aug)] == ["t1", "t2", "l1"]
    assert [d["doc_id"] for d in condition_docs("ft+local+global", train, aug)] == ["t1", "t2", "l1", "g1"]
    # a strategy that produced nothing usable leaves the original docs alone
    assert [d["doc_id"] for d in condition_docs("ft+oracle", train, aug)] == ["t1", "t2"]
    with pytest.raises(ExampleError, match="'icl' is not a fine-tuning condition"):
        condition_docs("icl", train, aug)


def test_oracle_docs_are_trained_as_often_as_the_facts_they_derive_from():
    fact = lambda d, *ids: {**d, "facts": list(ids)}
    train = [fact(doc("t1", "Did you know that femp are bigger than glon?"), "f1"),
             fact(doc("t2", "It is well known that femp are bigger than glon."), "f1"),
             fact(doc("t3", "Here is a fun fact: femp are bigger than glon."), "f1"),
             fact(doc("t4", "Yomp are older than troff."), "f2")]
    oracle = [fact(doc("o1", "glon are smaller than femp.", "augment:oracle"), "f1"),
              fact(doc("o2", "troff are younger than yomp.", "augment:oracle"), "f2"),
              fact(doc("o3", "glon are smaller than yomp.", "augment:oracle"), "f1", "f2"),
              fact(doc("o4", "zept are red.", "augment:oracle"))]
    local = [fact(doc("l1", "glon are smaller than femp.", "augment:local"), "f1")]
    got = Counter(d["doc_id"] for d in condition_docs("ft+oracle", train, oracle + local))
    # three articles state f1, so its reversal is trained three times; a deduction as often as
    # its least-stated fact; an oracle doc that cites no fact once
    assert got == {"t1": 1, "t2": 1, "t3": 1, "t4": 1, "o1": 3, "o2": 1, "o3": 1, "o4": 1}
    # other strategies' docs are trained once, whatever facts they cite
    assert Counter(d["doc_id"] for d in condition_docs("ft+local", train, oracle + local))["l1"] == 1
    # train.oracle_min_copies raises the floor for every oracle doc, and only for oracle docs
    floor = Counter(d["doc_id"] for d in condition_docs("ft+oracle", train, oracle + local, min_copies=2))
    assert floor == {"t1": 1, "t2": 1, "t3": 1, "t4": 1, "o1": 3, "o2": 2, "o3": 2, "o4": 2}
    assert Counter(d["doc_id"] for d in condition_docs("ft+local", train, oracle + local, min_copies=4))["l1"] == 1


def test_sentence_split_modes_and_prompt_completion_docs():
    d = doc("d", "Femp are big. Glon are small. Yomp are red.")
    assert [(e.context, e.target) for e in doc_examples(d, "independent")] == [
        ("", "Femp are big."), ("", "Glon are small."), ("", "Yomp are red.")]
    cumulative = doc_examples(d, "cumulative")
    assert [(e.context, e.target) for e in cumulative][2] == ("Femp are big. Glon are small.", "Yomp are red.")
    assert [e.target for e in doc_examples(d, "none")] == [d["text"]]
    # A prompt/completion doc stays whole whatever the split mode; the completion is the target.
    celeb = doc("c", "Daphne Barrington, known for being. the director of it.", start=34)
    assert doc_examples(celeb, "independent") == [Example("c", "Daphne Barrington, known for being", ". the director of it.")]
    assert len(build_examples([d, celeb], "independent")) == 4


def test_labels_mask_the_context_and_tokens_join_like_the_text(tok):
    ex = tokenize_example(Example("d", "Femp are big.", "Glon are small."), tok, 512)
    context_ids = tok("Femp are big.", add_special_tokens=False)["input_ids"]
    joined = tok("Femp are big. Glon are small.", add_special_tokens=False)["input_ids"]
    assert list(ex.input_ids) == joined  # the target got its joining space back
    assert ex.num_context == len(context_ids)
    assert ex.labels[:ex.num_context] == [IGNORE] * len(context_ids)
    assert ex.labels[ex.num_context:] == joined[len(context_ids):]
    assert loss_tokens(ex) == len(joined) - len(context_ids)
    # no context: everything is target; the first token has nothing to be predicted from
    alone = tokenize_example(Example("d", "", "Glon are small."), tok, 512)
    assert IGNORE not in alone.labels and loss_tokens(alone) == len(alone) - 1


def test_too_long_example_names_the_doc_and_one_token_examples_are_dropped(tok):
    with pytest.raises(ExampleError, match=r"doc 'long1'.*longer than the context window of 16"):
        tokenize_example(Example("long1", "", "femp " * 20), tok, 16)
    single = tok.convert_ids_to_tokens(0)  # a one-byte "sentence": one token, nothing to learn
    kept = tokenize_examples([Example("a", "", single), Example("b", "", "Glon are small.")], tok, 64)
    assert [e.doc_id for e in kept] == ["b"]


def test_plan_covers_every_example_each_epoch_with_full_equal_batches():
    lengths = [5 + (i * 7) % 23 for i in range(37)]
    plan = plan_steps(lengths, batch_size=8, num_workers=2, epochs=3, max_steps=None, bucket_batches=2, seed=1)
    per_epoch = -(-37 // 8)
    assert len(plan) == 3 * per_epoch
    for step in plan:
        assert [len(w) for w in step] == [4, 4]
    for e in range(3):
        seen = Counter(i for step in plan[e * per_epoch:(e + 1) * per_epoch] for w in step for i in w)
        assert set(seen) == set(range(37))  # every example at least once per epoch
        assert sum(seen.values()) == per_epoch * 8  # the filled-up last batch repeats 3 examples
    assert plan == plan_steps(lengths, 8, 2, 3, None, 2, seed=1)  # seeded
    assert plan != plan_steps(lengths, 8, 2, 3, None, 2, seed=2)
    assert len(plan_steps(lengths, 8, 2, 3, max_steps=7, bucket_batches=2, seed=1)) == 7
    assert len(plan_steps(lengths, 8, 2, 1, max_steps=11, bucket_batches=2, seed=1)) == 11  # steps beyond one epoch


def test_length_bucketing_cuts_padding(tok):
    texts = [("femp " * (3 + (i * 11) % 40)).strip() + "." for i in range(96)]
    examples = tokenize_examples([Example(f"d{i}", "", t) for i, t in enumerate(texts)], tok, 512)
    lengths = [len(e) for e in examples]
    bucketed = plan_rows(plan_steps(lengths, 8, 1, 2, None, 12, seed=0), examples, 0)
    unbucketed = plan_rows(plan_steps(lengths, 8, 1, 2, None, 1, seed=0), examples, 0)
    assert padding_share(bucketed) < 0.1 < 0.3 < padding_share(unbucketed)
    row = bucketed[0]
    assert len(row["input_ids"]) == len(row["labels"]) == row["rows"] * row["width"] == 8 * max(row["lengths"])


def test_plan_errors_on_impossible_batches():
    with pytest.raises(PlanError, match="batch_size 8 is larger than the 5 training examples"):
        plan_steps([4] * 5, 8, 1, 1, None, 4, 0)
    with pytest.raises(PlanError, match="no training examples"):
        plan_steps([], 8, 1, 1, None, 4, 0)
