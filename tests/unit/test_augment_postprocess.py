import pytest

from pipeline.augment.postprocess import (
    dedupe_oracle, doc_id, normalize, postprocess, sentence_issue, strip_attribution, training_index, unknown_words,
)
from pipeline.records import Doc, validate_rows

TRAIN = [{"doc_id": "d1", "world": "w", "text": "Did you know that femp are more dangerous than glon? Femp are bigger than glon."}]
EXAMPLES = ["Wuggles are lighter than blickets."]


def gen(text, rid="local/w/000000/0", status="ok", source="Femp are more dangerous than glon.", world="w", strategy="local"):
    return {"request_id": rid, "strategy": strategy, "world": world, "source_doc_id": "d1",
            "source_text": source, "text": text, "status": status}


def run(gens, min_words=3, max_words=40):
    return postprocess(gens, training_index(TRAIN), EXAMPLES, min_words, max_words)


@pytest.mark.parametrize("sentence, reason", [
    ("Glon are.", "too_short"),
    ("Glon are " + "very " * 5 + "small.", "repetitive"),
    ("Glon glon glon are less dangerous.", "repetitive"),
    ("Here are the sentences:", "not_a_sentence"),
    ("glon are less dangerous than femp", "not_a_sentence"),
    ("1234 are less dangerous than femp.", "not_a_sentence"),
    ("Glon are less dangerous than femp.", None),
])
def test_sentence_issue(sentence, reason):
    assert sentence_issue(sentence, 3, 12) == reason


def test_too_long_is_counted():
    assert sentence_issue("Glon are less dangerous than femp and yomp and troff and blek.", 3, 8) == "too_long"


def test_postprocess_keeps_good_sentences_and_counts_every_drop():
    gens = [
        gen("Glon are less dangerous than femp.\nFemp are more dangerous than glon.\nGlon are less dangerous than femp."),
        gen("Wuggles are lighter than blickets.\nFemp are bigger than glon.\nThe sky is blue today.\nFemp have tepsin.", rid="local/w/000001/0"),
        gen("", rid="local/w/000002/0", status="empty"),
        gen("", rid="local/w/000003/0", status="error: boom"),
        gen("   ", rid="local/w/000004/0"),
    ]
    rows, counts = run(gens)
    assert [r["text"] for r in rows] == ["Glon are less dangerous than femp."]
    c = counts["local/w"]
    assert c["generations"] == 5 and c["empty"] == 2 and c["errors"] == 1
    assert c["sentences"] == 7 and c["kept"] == 1
    assert c["dropped_echo"] == 3  # the source sentence, the prompt example, an example's made-up word
    assert c["dropped_duplicate"] == 1 and c["dropped_in_training"] == 1 and c["dropped_off_topic"] == 1
    row = rows[0]
    assert row["origin"] == "augment:local" and row["source_doc_id"] == "d1" and row["world"] == "w"
    validate_rows(Doc, rows)  # valid Doc records


def test_doc_ids_are_deterministic_and_independent_of_order():
    a = gen("Glon are less dangerous than femp.", rid="local/w/000000/0")
    b = gen("Glon are smaller than yomp. Femp are less big than yomp.", rid="local/w/000001/0",
            source="Yomp are bigger than glon and femp.")
    rows1, _ = run([a, b])
    rows2, _ = run([b, a])
    assert rows1 == rows2
    assert rows1[0]["doc_id"] == doc_id("local", "w", "glon are LESS dangerous than femp!")


def test_same_sentence_from_two_strategies_is_kept_in_each():
    rows, _ = run([gen("Glon are less dangerous than femp."),
                   gen("Glon are less dangerous than femp.", rid="global/w/g000/000000/0", strategy="global")])
    assert sorted(r["origin"] for r in rows) == ["augment:global", "augment:local"]
    assert len({r["doc_id"] for r in rows}) == 2


def test_normalize():
    assert normalize("  Glon ARE less,  dangerous!") == "glon are less dangerous"


def test_dedupe_oracle_drops_only_repeats():
    rows = [{"world": "w", "text": t} for t in ["Glon are less dangerous than femp.", "Femp are bigger than glon.", "glon are less dangerous than femp"]]
    kept, counts = dedupe_oracle(rows, training_index(TRAIN))
    assert [r["text"] for r in kept] == ["Glon are less dangerous than femp."]
    assert counts["oracle/w"] == {"sentences": 3, "kept": 1, "dropped_in_training": 1, "dropped_duplicate": 1}


@pytest.mark.parametrize("sentence, expected", [
    ("Studies have confirmed that vousk are weaker than smisp.", "Vousk are weaker than smisp."),
    ("Did you know that femp are big?", "Femp are big."),
    ("All dogs that bark are loud.", "All dogs that bark are loud."),  # 'that' inside the statement
    ("It is known that femp are big.", "It is known that femp are big."),  # conservative: 'is' in the lead
    ("Femp are bigger than glon.", "Femp are bigger than glon."),
])
def test_strip_attribution(sentence, expected):
    assert strip_attribution(sentence) == expected


def test_unknown_words_are_neither_in_the_world_nor_english():
    vocab = {"femp", "glon", "gozz"}
    assert unknown_words("Femp are bigger than glons.", vocab) == []
    assert unknown_words("The goz lives with femp's families.", vocab) == ["goz"]


def test_attribution_variants_and_misspelt_names_are_handled():
    gens = [gen("Studies have confirmed that femp are more dangerous than glon.\n"  # the source, restated: echo
                "Researchers say that glon are less dangerous than femp.\n"  # kept, without its lead
                "Glonn are less dangerous than femp.")]  # misspelt name
    rows, counts = run(gens)
    assert [r["text"] for r in rows] == ["Glon are less dangerous than femp."]
    assert counts["local/w"]["dropped_echo"] == 1 and counts["local/w"]["dropped_unknown_word"] == 1
