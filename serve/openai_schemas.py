"""Request bodies of the OpenAI-compatible routes, as real clients send them.

Declared fields are type-checked strictly (a string where a number belongs is a 400 naming the
field). Fields we do not know are ignored, as OpenAI-compatible servers such as vLLM ignore them,
and logged by the ingress (`ignored_fields`); fields we know but cannot honour with the value
given (`suffix`, `logit_bias`, `tools`, a `response_format` other than text, `best_of` above `n`,
content parts other than text) are a 400 naming the field, never silently dropped. Limits that
come from the config (n, logprobs, max_tokens, prompts, context window) are checked by the ingress.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve.schemas import ApiError, NonBlank, NonEmpty

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class LenientBody(BaseModel):
    """Strict types for declared fields; unknown fields kept aside (`model_extra`) and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    def ignored_fields(self, prefix: str = "") -> list[str]:
        return [f"{prefix}{k}" for k in (self.model_extra or {})]


class StreamOptions(LenientBody):
    include_usage: bool = Field(False, description="Send a last chunk with the usage of the whole request.")


class SamplingFields(LenientBody):
    model: NonBlank = Field(..., description="A served model: 'base' or a tuned condition (GET /v1/models).")
    max_tokens: int | None = Field(None, ge=0, description="Tokens to generate; default and cap from the config.")
    temperature: float | None = Field(1.0, ge=0, le=2, description="0 decodes greedily.")
    top_p: float | None = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (ignored when greedy).")
    stop: NonEmpty | list[NonEmpty] | None = Field(None, description="Up to 4 strings that end the text.")
    n: int | None = Field(1, ge=1, description="Completions per prompt (cap: serve.max_n).")
    stream: bool | None = Field(False, description="Server-sent events, one chunk per decoded piece of text.")
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, description="Seeds the sampling of each completion (choice j gets seed + j).")
    presence_penalty: float | None = Field(0.0, ge=-2, le=2, description="Subtracted once from each generated token's logit.")
    frequency_penalty: float | None = Field(0.0, ge=-2, le=2, description="Subtracted per occurrence of a generated token.")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported: must be empty.")
    user: str | None = Field(None, description="Caller id (accepted, unused).")

    def check(self) -> None:
        """Values this server cannot honour: a 400 naming the field."""
        if self.logit_bias:
            raise ApiError(400, "logit_bias", "not supported; send {} or leave it out")

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise ApiError(400, "stop", f"at most 4 stop strings, got {len(stops)}")
        return tuple(stops)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingFields):
    prompt: NonBlank | list[NonBlank] | TokenIds | list[TokenIds] = Field(
        ..., description="A prompt, a list of prompts, token ids, or a list of token-id lists.")
    echo: bool | None = Field(False, description="Return the prompt (and its log-probs) before the completion.")
    logprobs: int | None = Field(None, ge=0, description="Log-probs of each token and its top alternatives (cap: serve.max_logprobs).")
    best_of: int | None = Field(None, ge=1, description="Only equal to n (no server-side best-of selection).")
    suffix: str | None = Field(None, description="Not supported: must be empty.")

    def check(self) -> None:
        super().check()
        if isinstance(self.prompt, list) and not self.prompt:
            raise ApiError(400, "prompt", "must not be an empty list")
        if self.suffix:
            raise ApiError(400, "suffix", "insertion after a suffix is not supported")
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise ApiError(400, "best_of", f"must equal n ({self.n or 1}); best-of selection is not supported")
        if self.max_tokens == 0 and not self.echo:
            raise ApiError(400, "max_tokens", "0 is allowed only with echo: true (scoring the prompt)")

    def prompts(self) -> list[str | tuple[int, ...]]:
        """Every prompt: text, or token ids as a tuple."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [tuple(p)]
        return [x if isinstance(x, str) else tuple(x) for x in p]


class ContentPart(LenientBody):
    type: str
    text: str | None = None


class ChatMessage(LenientBody):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self, where: str) -> str:
        """The message's text; text parts are joined by newlines; other parts are refused."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise ApiError(400, f"{where}.content[{j}].type",
                               f"only text content parts are supported, got {part.type!r}")
        return "\n".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name of max_tokens (wins over it).")
    logprobs: bool | None = Field(False, description="Return the log-prob of each generated token.")
    top_logprobs: int | None = Field(None, ge=0, description="Alternatives per token (needs logprobs; cap: serve.max_logprobs).")
    response_format: dict[str, Any] | None = Field(None, description="Only {'type': 'text'}.")
    tools: list[dict[str, Any]] | None = Field(None, description="Not supported: must be empty.")
    tool_choice: str | dict[str, Any] | None = Field(None, description="Only 'none' or 'auto' without tools.")

    def check(self) -> None:
        super().check()
        if self.tools:
            raise ApiError(400, "tools", "function calling is not supported")
        if self.tool_choice not in (None, "none", "auto"):
            raise ApiError(400, "tool_choice", "only 'none' or 'auto' (no tools are supported)")
        if self.response_format and self.response_format.get("type") != "text":
            raise ApiError(400, "response_format", "only {'type': 'text'} is supported")
        if self.top_logprobs and not self.logprobs:
            raise ApiError(400, "top_logprobs", "needs logprobs: true")
        if self.max_tokens == 0 and self.max_completion_tokens is None:
            raise ApiError(400, "max_tokens", "must be at least 1")

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def template_messages(self) -> list[dict]:
        """Messages for the chat template: text content; `developer` speaks as `system`."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text(f"messages[{i}]")}
                for i, m in enumerate(self.messages)]

    def ignored_fields(self, prefix: str = "") -> list[str]:
        out = super().ignored_fields(prefix)
        for i, m in enumerate(self.messages):
            out += m.ignored_fields(f"messages[{i}].")
        return out


class TokenizeRequest(LenientBody):
    """vLLM's /tokenize (lm-eval's `tokenizer_backend=remote` uses it)."""

    model: NonBlank = Field("base", description="Whose tokenizer (default: base).")
    prompt: str = Field(..., description="Text to tokenize.")
    add_special_tokens: bool = Field(True, description="Add the tokenizer's default special tokens (BOS).")


class DetokenizeRequest(LenientBody):
    model: NonBlank = Field("base", description="Whose tokenizer (default: base).")
    tokens: list[Annotated[int, Field(ge=0)]] = Field(..., description="Token ids to decode.")
