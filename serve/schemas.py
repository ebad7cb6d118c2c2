"""Request bodies of the evaluator routes (pydantic, strict types, unknown fields rejected),
ApiError, OpenAI's error shape, and the field path an error names.

The evaluator's routes are this server's own API, so a misspelt field is an error there; the
OpenAI-compatible bodies (`serve.openai_schemas`) ignore unknown fields as OpenAI clients expect.
Limits that come from the config (number of items, context window) are checked by the ingress
and reported the same way: a 4xx whose JSON names the offending field.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ApiError(Exception):
    """A request the API refuses: HTTP status, the offending field (dotted path) and why."""

    def __init__(self, status: int, param: str, message: str):
        super().__init__(status, param, message)
        self.status, self.param, self.message = status, param, message

    def body(self) -> dict:
        return error_body(self.param, self.message, "not_found" if self.status == 404 else "invalid_request_error")


def error_body(param: str, message: str, kind: str = "invalid_request_error") -> dict:
    """OpenAI's error shape; the message starts with the field so it reads on its own."""
    return {"error": {"message": f"{param}: {message}", "type": kind, "param": param, "code": None}}


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or blank")
    return text


NonBlank = Annotated[str, AfterValidator(_not_blank)]
NonEmpty = Annotated[str, Field(min_length=1)]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EvalItem(StrictBody):
    prompt: NonBlank
    choices: list[NonBlank] = Field(..., min_length=2, description="Continuations scored after the prompt.")


class EvaluateRequest(StrictBody):
    condition: NonBlank = Field(..., description="base, icl, or a tuned condition of the run.")
    items: list[EvalItem] = Field(..., min_length=1)
    world: NonBlank | None = Field(
        None, description="icl only: the world whose training documents form the context (default: the run's only world)."
    )


class EvaluateSplitRequest(StrictBody):
    condition: NonBlank
    world: NonBlank
    split: NonBlank


@lru_cache(maxsize=1)
def _fields() -> frozenset[str]:
    """Every field name of every request body (the OpenAI ones live in serve.openai_schemas)."""
    from serve import openai_schemas as o

    bodies = (o.CompletionRequest, o.ChatCompletionRequest, o.ChatMessage, o.ContentPart, o.StreamOptions,
              o.TokenizeRequest, o.DetokenizeRequest, EvalItem, EvaluateRequest, EvaluateSplitRequest)
    return frozenset(name for m in bodies for name in m.model_fields)


def field_path(loc: tuple, unknown_field: bool = False) -> str:
    """('body', 'items', 0, 'choices') -> 'items[0].choices'; the bare body -> 'body'.

    Pydantic also puts the names of union branches and validators in `loc` ('str',
    'list[function-after[...]]'); only real field names and list indices are kept, and for an
    unknown field, its name (the last part).
    """
    out = ""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    for k, p in enumerate(parts):
        if unknown_field and k == len(parts) - 1 and isinstance(p, str):
            out += f".{p}" if out else p
        elif isinstance(p, int) and out:  # a bare index is a position in malformed JSON, not a field
            out += f"[{p}]"
        elif p in _fields():
            out += f".{p}" if out else p
    return out or "body"
