"""The user's corpus: JSONL, Parquet and text folders; QA items; every bad record named by file and line."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.records import Doc, Item, validate_rows
from pipeline.worlds import DataFileError, WorldError, corpus
from pipeline.data.config import CorpusConfig


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def build(**kw):
    return corpus.build(CorpusConfig(**kw), 0)


def test_jsonl_documents_and_items(tmp_path):
    docs_file = write_jsonl(tmp_path / "docs.jsonl", [{"text": "Zorbs are blue. They glow."}, "", {"text": " Second doc. ", "extra": 1}])
    items_file = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "What colour are zorbs?", "choices": ["blue", "red"], "answer": 0},
        {"question": "Do zorbs glow? ", "choices": ["no", " yes"], "answer": "yes", "id": "glow", "split": "rephrase", "subtask": "glow"},
    ])
    docs, items, facts = build(path=str(docs_file), items=str(items_file))
    assert [d["text"] for d in docs] == ["Zorbs are blue. They glow.", "Second doc."]
    assert [d["doc_id"] for d in docs] == ["corpus/d00000", "corpus/d00001"]
    assert items[0] == {"item_id": "corpus/q00001", "world": "corpus", "split": "qa", "subtask": "qa",
                        "prompt": "What colour are zorbs?", "choices": [" blue", " red"], "answer_index": 0,
                        "support_fact_ids": []}
    assert (items[1]["item_id"], items[1]["prompt"], items[1]["choices"], items[1]["answer_index"]) == (
        "corpus/glow", "Do zorbs glow?", [" no", " yes"], 1)
    assert facts == [] and corpus.closure(facts) == set() and corpus.oracle(facts) == []
    assert corpus.parse("Zorbs are blue.", facts) is None
    validate_rows(Doc, docs)
    validate_rows(Item, items)


def test_parquet_and_text_folder(tmp_path):
    pq.write_table(pa.table({"body": ["One.", "Two."]}), tmp_path / "c.parquet")
    docs, _, _ = build(path=str(tmp_path / "c.parquet"), text_field="body")
    assert [d["text"] for d in docs] == ["One.", "Two."]
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.md").write_text("# B\nbee text\n")
    (folder / "sub" / "a.txt").write_text("a text")
    (folder / "skip.csv").write_text("x,y")
    docs, items, _ = build(path=str(folder))
    assert [d["text"] for d in docs] == ["# B\nbee text", "a text"] and items == []


@pytest.mark.parametrize("lines, message", [
    (['{"text": "ok"}', '{"text": "broken"'], r"docs.jsonl:2: not valid JSON"),
    (['{"text": "ok"}', '["text"]'], r"docs.jsonl:2: expected a JSON object, got list"),
    (['{"body": "ok"}'], r"docs.jsonl:1: no field 'text' \(fields: body; data.corpus.text_field names it\)"),
    (['{"text": 3}'], r"docs.jsonl:1: field 'text' must be a string, got 3"),
    (['{"text": "ok"}', '', '{"text": "  "}'], r"docs.jsonl:3: field 'text' is empty"),
])
def test_malformed_document_lines_name_file_and_line(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "docs.jsonl", lines)
    with pytest.raises(DataFileError, match=message):
        build(path=str(path))


@pytest.mark.parametrize("row, message", [
    ({"question": "q", "choices": ["a"], "answer": 0}, r"qa.jsonl:2: 'choices' must be a list of two or more"),
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, r"qa.jsonl:2: 'answer' 2 is not one of the 2 choices"),
    ({"question": "q", "choices": ["a", "b"], "answer": "c"}, r"qa.jsonl:2: 'answer' 'c' is not one of"),
    ({"question": "q", "choices": ["a", "a "], "answer": 0}, r"qa.jsonl:2: 'choices' has a duplicate"),
    ({"question": "", "choices": ["a", "b"], "answer": 0}, r"qa.jsonl:2: 'question' must be non-empty"),
    ({"question": "q", "choices": ["a", "b"], "answer": 0, "anser": 1}, r"qa.jsonl:2: unknown field 'anser'"),
    ({"question": "q", "choices": ["a", "b"], "answer": True}, r"qa.jsonl:2: 'answer' must be a choice index"),
    ({"question": "q", "choices": ["a", "b"], "answer": 0, "id": "x"}, r"qa.jsonl:2: duplicate id 'x'"),
])
def test_malformed_items_name_file_and_line(tmp_path, row, message):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "ok"}])
    items = write_jsonl(tmp_path / "qa.jsonl", [{"question": "fine", "choices": ["a", "b"], "answer": 1, "id": "x"}, row])
    with pytest.raises(DataFileError, match=message):
        build(path=str(docs), items=str(items))


def test_missing_or_unsupported_paths(tmp_path):
    with pytest.raises(WorldError, match=r"path: '.*nope.jsonl' does not exist"):
        build(path=str(tmp_path / "nope.jsonl"))
    (tmp_path / "c.csv").write_text("text\nx\n")
    with pytest.raises(WorldError, match="neither a .jsonl or .parquet file nor a folder"):
        build(path=str(tmp_path / "c.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorldError, match="holds no .txt or .md files"):
        build(path=str(tmp_path / "empty"))
    pq.write_table(pa.table({"text": ["ok", None]}), tmp_path / "c.parquet")
    with pytest.raises(DataFileError, match=r"c.parquet: row 1: column 'text' must be non-empty text"):
        build(path=str(tmp_path / "c.parquet"))
