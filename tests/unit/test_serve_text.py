"""Incremental decoding and stop strings: pieces add up to the whole text, nothing partial shows."""

from __future__ import annotations

import pytest

from pipeline.models import load_tokenizer
from serve.text import IncrementalDetokenizer, StopMatcher


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_a_character_split_over_tokens_appears_once_whole(tok):
    ids = tok("h\u00e9llo", add_special_tokens=False)["input_ids"]
    assert len(ids) == 6  # the byte-level tokenizer splits '\u00e9' in two
    detok = IncrementalDetokenizer(lambda x: tok.decode(x, skip_special_tokens=True), tok("Say:")["input_ids"])
    pieces = [detok.push(t) for t in ids] + [detok.flush()]
    assert pieces == ["h", "", "\u00e9", "l", "l", "o", ""]


def test_an_unfinished_character_is_flushed_at_the_end(tok):
    ids = tok("\u00e9", add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(lambda x: tok.decode(x, skip_special_tokens=True), [])
    assert detok.push(ids[0]) == ""
    assert detok.flush() == "\ufffd"


@pytest.mark.parametrize("pieces,stops,shown,stopped", [
    (["Hel", "lo wo", "rld"], ("lo w",), ["", "Hel"], True),
    (["ab", "c", "d"], ("cd",), ["a", "b", ""], True),
    (["abc", "def"], ("xy",), ["ab", "cde"], False),
    (["a", "STOP", "b"], ("STOP", "a"), [""], True),
])
def test_stop_strings_are_found_across_pieces_and_never_shown(pieces, stops, shown, stopped):
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        out.append(matcher.push(piece))
        if matcher.stopped:
            break
    assert out == shown
    assert matcher.stopped == stopped
    whole = "".join(pieces)
    cut = min((whole.find(s) for s in stops if s in whole), default=len(whole))
    assert "".join(out) + matcher.flush() == whole[:cut]


def test_the_search_starts_where_a_new_match_can_begin():
    matcher = StopMatcher(("xyz",))
    for _ in range(1000):
        matcher.push("ab")
    assert not matcher.stopped
    assert matcher.push("xy") == "ab"  # 'xy' may start a stop string: held back
    assert matcher.push("z") == "" and matcher.stopped
