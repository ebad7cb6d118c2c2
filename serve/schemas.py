"""Request bodies of the HTTP API (pydantic, strict types, unknown fields rejected) and ApiError.

The OpenAI-compatible subset: `model`, `prompt` / `messages`, `max_tokens`, `temperature`,
`top_p`, `stop`, `n` (1 only), `stream` (false only), `user`. Limits that come from the config
(max_tokens cap, number of prompts or items, context window) are checked by the ingress and
reported the same way: a 4xx whose JSON names the offending field.
"""

from __future__ import annotations

from typing import Annotated, Literal

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


class SamplingFields(StrictBody):
    model: NonBlank = Field(..., description="A served model: 'base' or a tuned condition (GET /v1/models).")
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate; default and cap from the config.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 decodes greedily.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (ignored when greedy).")
    stop: NonEmpty | list[NonEmpty] | None = Field(None, description="Up to 4 strings that end the text.")
    n: Literal[1] = Field(1, description="Completions per prompt; only 1 is supported.")
    stream: Literal[False] = Field(False, description="Streaming is not supported; must be false.")
    user: str | None = Field(None, description="Caller id (accepted, unused).")

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise ApiError(400, "stop", f"at most 4 stop strings, got {len(stops)}")
        return tuple(stops)


class CompletionRequest(SamplingFields):
    prompt: NonBlank | list[NonBlank] = Field(..., description="A prompt or a list of prompts.")

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(StrictBody):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1, description="The conversation so far.")


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


_FIELDS = {name for m in (CompletionRequest, ChatCompletionRequest, ChatMessage, EvalItem, EvaluateRequest,
                          EvaluateSplitRequest) for name in m.model_fields}


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
        elif p in _FIELDS:
            out += f".{p}" if out else p
    return out or "body"
