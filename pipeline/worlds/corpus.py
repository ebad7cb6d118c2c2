"""The user's own corpus: documents from JSONL, Parquet or a folder of text files, plus optional
multiple-choice QA items. Every record is validated; a bad one is an error naming file and line.

Documents: a `.jsonl` file (one JSON object per line, the text in `text_field`; blank lines are
skipped), a `.parquet` file (a string column `text_field`), or a folder whose `.txt` and `.md`
files (searched recursively, in sorted order) are one document each.
Items: a `.jsonl` file of {"question": str, "choices": [str, ...], "answer": index or choice text}
with optional "id", "split" (default "qa") and "subtask" (default "qa"). A choice is stored with
one leading space, as the likelihood scorer expects.
A corpus has no known facts: closure is empty, parse recognises nothing, oracle derives nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import storage

from pipeline.worlds import DataFileError, WorldError

WORLD = "corpus"
ITEM_KEYS = {"question", "choices", "answer", "id", "split", "subtask"}


RELATIVE = "a relative path is taken from the directory the command runs in"


def build(cfg, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    texts = read_documents(storage.location(cfg.path), cfg.text_field)  # a local path or a URI
    docs = [{"doc_id": f"{WORLD}/d{i:05d}", "world": WORLD, "text": t, "origin": "train", "facts": []}
            for i, t in enumerate(texts)]
    items = read_items(storage.location(cfg.items)) if cfg.items else []
    return docs, items, []


def read_documents(path: Path, field: str) -> list[str]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
        if not files:
            raise WorldError(f"path: folder {str(path)!r} holds no .txt or .md files")
        return [_text_file(p) for p in files]
    if not path.is_file():
        raise WorldError(f"path: {str(path)!r} does not exist ({RELATIVE})")
    if path.suffix.lower() == ".jsonl":
        return [_text_of(row, field, path, n) for n, row in _jsonl(path)]
    if path.suffix.lower() == ".parquet":
        return _parquet(path, field)
    raise WorldError(f"path: {str(path)!r} is neither a .jsonl or .parquet file nor a folder of .txt / .md files")


def _text_file(p: Path) -> str:
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFileError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text.strip():
        raise DataFileError(f"{p}: empty document")
    return text.strip()


def _jsonl(path: Path):
    """(line number, parsed object) of every non-blank line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}:{n}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise DataFileError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        rows.append((n, row))
    if not rows:
        raise DataFileError(f"{path}: no records")
    return rows


def _text_of(row: dict, field: str, path: Path, n: int) -> str:
    if field not in row:
        keys = ", ".join(sorted(row)) or "none"
        raise DataFileError(f"{path}:{n}: no field {field!r} (fields: {keys}; data.corpus.text_field names it)")
    text = row[field]
    if not isinstance(text, str):
        raise DataFileError(f"{path}:{n}: field {field!r} must be a string, got {text!r:.60}")
    if not text.strip():
        raise DataFileError(f"{path}:{n}: field {field!r} is empty")
    return text.strip()


def _parquet(path: Path, field: str) -> list[str]:
    from pipeline.records import read_parquet

    try:
        table = read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
        raise DataFileError(f"{path}: not a readable Parquet file ({err})") from None
    if field not in table.column_names:
        raise DataFileError(f"{path}: no column {field!r} (columns: {table.column_names})")
    texts = table.column(field).to_pylist()
    if not texts:
        raise DataFileError(f"{path}: no rows")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise DataFileError(f"{path}: row {i}: column {field!r} must be non-empty text, got {text!r:.60}")
    return [t.strip() for t in texts]


def read_items(path: Path) -> list[dict]:
    if not path.is_file():
        raise WorldError(f"items: {str(path)!r} does not exist ({RELATIVE})")
    items, seen = [], set()
    for n, row in _jsonl(path):
        where = f"{path}:{n}"
        unknown = sorted(set(row) - ITEM_KEYS)
        if unknown:
            raise DataFileError(f"{where}: unknown field {unknown[0]!r}; expected {sorted(ITEM_KEYS)}")
        question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise DataFileError(f"{where}: 'question' must be non-empty text")
        if (not isinstance(choices, list) or len(choices) < 2
                or not all(isinstance(c, str) and c.strip() for c in choices)):
            raise DataFileError(f"{where}: 'choices' must be a list of two or more non-empty strings")
        stripped = [c.strip() for c in choices]
        if len(set(stripped)) != len(stripped):
            raise DataFileError(f"{where}: 'choices' has a duplicate")
        if isinstance(answer, bool) or not isinstance(answer, (int, str)):
            raise DataFileError(f"{where}: 'answer' must be a choice index or the text of a choice")
        index = answer if isinstance(answer, int) else (stripped.index(answer.strip()) if answer.strip() in stripped else -1)
        if not 0 <= index < len(choices):
            raise DataFileError(f"{where}: 'answer' {answer!r} is not one of the {len(choices)} choices")
        item_id = f"{WORLD}/{row.get('id', f'q{n:05d}')}"
        if item_id in seen:
            raise DataFileError(f"{where}: duplicate id {row.get('id')!r}")
        seen.add(item_id)
        for key in ("split", "subtask", "id"):
            if key in row and (not isinstance(row[key], str) or not row[key].strip()):
                raise DataFileError(f"{where}: {key!r} must be non-empty text")
        items.append({"item_id": item_id, "world": WORLD, "split": row.get("split", "qa"),
                      "subtask": row.get("subtask", "qa"), "prompt": question.rstrip(),
                      "choices": [" " + c for c in stripped], "answer_index": index, "support_fact_ids": []})
    return items


def closure(facts: list[dict]) -> set[tuple[str, str, str]]:
    return set()


def parse(sentence: str, facts: list[dict]) -> None:
    return None


def oracle(facts: list[dict]) -> list[tuple[str, list[str]]]:
    return []
