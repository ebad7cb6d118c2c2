"""Text of a generation as it grows, one token at a time: incremental decoding and stop strings.

Neither class decodes or searches the whole text at each step. `IncrementalDetokenizer` decodes
only a short window of recent tokens (the scheme of vLLM and TGI): a token whose bytes do not yet
form a whole character is held until they do. `StopMatcher` searches only the part of the text
where a new match can begin, and holds back the few characters that could be the start of a stop
string, so streamed text never shows part of one.
"""

from __future__ import annotations

from typing import Callable

#: Prompt tokens decoded before the first generated one, so its leading space decodes as in context.
CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """Turns token ids into text deltas; `decode` maps ids to text (special tokens skipped)."""

    def __init__(self, decode: Callable[[list[int]], str], prompt_ids: list[int]):
        self.decode = decode
        self.ids = list(prompt_ids[-CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)

    def push(self, token_id: int) -> str:
        """The text this token completes ('' while a character is still incomplete)."""
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held (an incomplete character decodes to U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self.read_offset == len(self.ids):
            return ""
        before = self.decode(self.ids[self.prefix_offset:self.read_offset])
        text = self.decode(self.ids[self.prefix_offset:])
        if len(text) <= len(before) or (text.endswith("\ufffd") and not final):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return text[len(before):]


class StopMatcher:
    """Finds the first stop string in text that arrives in pieces; returns what is safe to show."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, delta: str) -> str:
        """Add `delta`; the text now safe to emit. After a match, `stopped` is True and the text
        ends just before the stop string."""
        old = len(self.text)
        self.text += delta
        hits = [i for s in self.stops if (i := self.text.find(s, max(0, old - len(s) + 1))) >= 0]
        if hits:
            self.text, self.stopped = self.text[:min(hits)], True
            return self.flush()
        safe = max(self.emitted, len(self.text) - self.hold)
        out, self.emitted = self.text[self.emitted:safe], safe
        return out

    def flush(self) -> str:
        """The held-back rest, at the end of the generation."""
        out, self.emitted = self.text[self.emitted:], len(self.text)
        return out
