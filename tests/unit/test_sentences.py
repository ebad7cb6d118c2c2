import pytest

from pipeline.sentences import split_doc, split_sentences


def test_split_sentences_handles_abbreviations_numbers_and_lowercase():
    text = 'femp are big. Dr. Who eats 3.5 kg! "Really?" Yes.\nglon are small'
    assert split_sentences(text) == ["femp are big.", "Dr. Who eats 3.5 kg!", '"Really?"', "Yes.", "glon are small"]


def test_split_modes():
    text = "A b. C d. E f."
    assert split_doc(text, "none") == [("", "A b. C d. E f.")]
    assert split_doc(text, "independent") == [("", "A b."), ("", "C d."), ("", "E f.")]
    assert split_doc(text, "cumulative") == [("", "A b."), ("A b.", "C d."), ("A b. C d.", "E f.")]
    with pytest.raises(ValueError, match="'words'"):
        split_doc(text, "words")
