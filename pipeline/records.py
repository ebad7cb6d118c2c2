"""Typed records passed between stages as Parquet files, and atomic file writes.

One schema per record kind (Doc, Item, Score, Fact). Writing checks every row against it and
goes through a temporary file that is fsync'ed and then published (renamed locally, one complete
upload on an object store; see `pipeline.storage`), so a crash never leaves a half-written file;
reading checks the file's columns and types, so a stage never works on someone else's table.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.storage import AnyPath, is_remote, publish_dir, publish_file


class RecordError(ValueError):
    """A table or row that does not match its record schema; names the file, row and column."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Doc(Record):
    """A training document, original or augmented."""

    doc_id: str
    world: str
    text: str
    origin: Literal["train", "augment:local", "augment:global", "augment:oracle"]
    source_doc_id: str | None = None
    facts: list[str] = []
    #: Character offset where the trained completion starts: 0 trains on the whole text;
    #: a prompt/completion doc (celebrities) trains only on text[completion_start:].
    completion_start: int = 0

    @model_validator(mode="after")
    def _check(self) -> "Doc":
        if not self.text.strip():
            raise ValueError("text is empty")
        if not 0 <= self.completion_start < len(self.text):
            raise ValueError(f"completion_start {self.completion_start} outside text of {len(self.text)} chars")
        return self


class Item(Record):
    """A multiple-choice test question, scored by likelihood of each choice after the prompt."""

    item_id: str
    world: str
    split: str
    subtask: str
    prompt: str
    choices: list[str]
    answer_index: int
    support_fact_ids: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> "Item":
        if not self.prompt.strip():
            raise ValueError("prompt is empty")
        if len(self.choices) < 2:
            raise ValueError(f"needs at least 2 choices, has {len(self.choices)}")
        if any(not c.strip() for c in self.choices):
            raise ValueError("a choice is empty")
        if not 0 <= self.answer_index < len(self.choices):
            raise ValueError(f"answer_index {self.answer_index} out of range for {len(self.choices)} choices")
        return self


class Score(Record):
    """Raw likelihood numbers of one item under one condition; accuracies are derived later."""

    item_id: str
    condition: str
    choice_logprobs: list[float]
    choice_num_tokens: list[int]
    choice_num_chars: list[int]


class Fact(Record):
    """A ground-truth triple of a world's knowledge graph."""

    fact_id: str
    world: str
    subject: str
    relation: str
    object: str


SCHEMAS: dict[type[Record], pa.Schema] = {
    Doc: pa.schema([
        ("doc_id", pa.string()), ("world", pa.string()), ("text", pa.string()),
        ("origin", pa.string()), ("source_doc_id", pa.string()), ("facts", pa.list_(pa.string())),
        ("completion_start", pa.int64()),
    ]),
    Item: pa.schema([
        ("item_id", pa.string()), ("world", pa.string()), ("split", pa.string()),
        ("subtask", pa.string()), ("prompt", pa.string()), ("choices", pa.list_(pa.string())),
        ("answer_index", pa.int64()), ("support_fact_ids", pa.list_(pa.string())),
    ]),
    Score: pa.schema([
        ("item_id", pa.string()), ("condition", pa.string()),
        ("choice_logprobs", pa.list_(pa.float64())), ("choice_num_tokens", pa.list_(pa.int64())),
        ("choice_num_chars", pa.list_(pa.int64())),
    ]),
    Fact: pa.schema([
        ("fact_id", pa.string()), ("world", pa.string()), ("subject", pa.string()),
        ("relation", pa.string()), ("object", pa.string()),
    ]),
}
_ID_FIELD = {Doc: "doc_id", Item: "item_id", Score: "item_id", Fact: "fact_id"}


def validate_rows(kind: type[Record], rows: list[dict], where: str = "") -> list[dict]:
    """Check every row against the record model; the error names the row's id and the column."""
    out = []
    id_field = _ID_FIELD[kind]
    for i, row in enumerate(rows):
        try:
            out.append(kind.model_validate(row).model_dump())
        except ValidationError as err:
            first = err.errors()[0]
            col = ".".join(str(p) for p in first["loc"]) or "(row)"
            ident = row.get(id_field, f"row {i}") if isinstance(row, dict) else f"row {i}"
            msg = first["msg"].removeprefix("Value error, ")
            raise RecordError(f"{where}{kind.__name__} {ident!r}: {col}: {msg}") from None
    seen: set[str] = set()
    for row in out:
        if kind is not Score and row[id_field] in seen:
            raise RecordError(f"{where}{kind.__name__} {row[id_field]!r}: duplicate {id_field}")
        seen.add(row[id_field])
    return out


def to_table(kind: type[Record], rows: list[dict]) -> pa.Table:
    rows = validate_rows(kind, rows)
    return pa.Table.from_pylist(rows, schema=SCHEMAS[kind])


@contextmanager
def atomic_path(path: AnyPath) -> Iterator[Path]:
    """Yield a local temporary path; if the block succeeds it is published onto `path` (local or
    run storage) durably and atomically (see `pipeline.storage.publish_file`), else deleted."""
    if is_remote(path):
        folder = Path(tempfile.mkdtemp(prefix="kl-publish-"))
        tmp = folder / path.name
    else:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        folder, tmp = None, path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the usual mode, under the umask
    try:
        yield tmp
        publish_file(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def atomic_dir(path: AnyPath) -> Iterator[Path]:
    """Yield a local temporary folder; if the block succeeds it replaces `path` (see
    `pipeline.storage.publish_dir`: the old folder stays until the new one is in place)."""
    if is_remote(path):
        tmp = Path(tempfile.mkdtemp(prefix=f"kl-{path.name}-"))
    else:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        publish_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: AnyPath, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: AnyPath, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_records(path: AnyPath, kind: type[Record], rows: list[dict]) -> None:
    """Validate rows as `kind` and write them atomically as Parquet."""
    table = to_table(kind, rows)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: AnyPath, schema: pa.Schema | None = None) -> pa.Table:
    """A Parquet file from a local path or run storage."""
    if is_remote(path):
        return pq.read_table(pa.BufferReader(path.read_bytes()), schema=schema)
    return pq.read_table(path, schema=schema)


def read_table(path: AnyPath, kind: type[Record]) -> pa.Table:
    """Read a Parquet file and check its columns and types against `kind`'s schema."""
    path = path if is_remote(path) else Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file (has the stage that writes it run?)")
    table = read_parquet(path)
    expected = SCHEMAS[kind]
    missing = [n for n in expected.names if n not in table.schema.names]
    extra = [n for n in table.schema.names if n not in expected.names]
    if missing or extra:
        raise RecordError(f"{path}: not a {kind.__name__} table: missing columns {missing}, unexpected columns {extra}")
    for field in expected:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise RecordError(f"{path}: column {field.name!r} has type {got}, expected {field.type}")
    return table.select(expected.names)


def read_records(path: AnyPath, kind: type[Record]) -> list[dict]:
    return read_table(path, kind).to_pylist()
