"""Batched token-by-token generation (no Ray): a batch answers exactly like its prompts alone;
limits, stops, end tokens, seeds, penalties and log-probs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pipeline.models import load_model, load_tokenizer
from serve.decoding import SamplingParams as P
from serve.generation import GenerationRequest, chunks, fold, generate_batch, make_decoder
from serve.text import CONTEXT_TOKENS


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


def _gen(lm, prompt, **params):
    model, tok = lm
    return generate_batch(model, tok, [GenerationRequest(prompt, P(**params))])[0]


def test_batch_of_mixed_lengths_equals_one_at_a_time(lm):
    model, tok = lm
    reqs = [GenerationRequest("Hello there", P(7)), GenerationRequest("A much longer prompt than the first", P(3)),
            GenerationRequest("x", P(12)), GenerationRequest("Sampled", P(4, temperature=0.7, top_p=0.9, seed=1))]
    batch = generate_batch(model, tok, reqs)
    alone = [generate_batch(model, tok, [r])[0] for r in reqs]
    assert [b.token_ids for b in batch] == [a.token_ids for a in alone]
    assert [b.text for b in batch] == [a.text for a in alone]
    assert [r.completion_tokens for r in batch] == [7, 3, 12, 4]
    assert [r.prompt_tokens for r in batch] == [len(tok(r.prompt)["input_ids"]) for r in reqs]
    assert all(r.finish_reason == "length" for r in batch)


def test_greedy_text_is_the_decoded_argmax_continuation(lm):
    model, tok = lm
    ids = tok("zorp blick", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        for _ in range(5):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = tok.decode(ids[0, -5:], skip_special_tokens=True)
    assert _gen(lm, "zorp blick", max_tokens=5).text == expected


def test_token_id_prompts_equal_their_text(lm):
    _, tok = lm
    ids = tuple(tok("zorp blick")["input_ids"])
    assert _gen(lm, ids, max_tokens=4).token_ids == _gen(lm, "zorp blick", max_tokens=4).token_ids


def test_stop_string_is_matched_in_the_generated_text_only(lm):
    free = _gen(lm, "Hello", max_tokens=6).text  # the tiny model repeats 'o'
    assert free == "o" * 6
    # "oo" also spans the prompt's last 'o' and the first generated one: that must not count
    stopped = _gen(lm, "Hello", max_tokens=6, stop=("oo",))
    assert (stopped.text, stopped.finish_reason, stopped.completion_tokens) == ("", "stop", 2)
    unmatched = _gen(lm, "Hello", max_tokens=6, stop=("zz",))
    assert (unmatched.text, unmatched.finish_reason) == (free, "length")


def test_generation_stops_at_the_stop_string_not_at_max_tokens(lm):
    result = _gen(lm, "Hello", max_tokens=30, stop=("ooo",))
    assert (result.text, result.finish_reason, result.completion_tokens, len(result.token_ids)) == ("", "stop", 3, 3)


def test_decoding_never_decodes_the_whole_text(lm):
    model, tok = lm
    seen = []

    def decode(ids):
        seen.append(len(ids))
        return tok.decode(ids, skip_special_tokens=True)

    decoder = make_decoder(model, tok, [GenerationRequest("Hello", P(40, stop=("zzz",)))], decode=decode)
    out = fold([c[0] for c in chunks(decoder) if c[0] is not None])
    assert out.completion_tokens == 40
    assert max(seen) <= CONTEXT_TOKENS + 2  # a short window, not the 40 tokens so far


def test_streamed_chunks_add_up_to_the_whole_result(lm):
    model, tok = lm
    reqs = [GenerationRequest("h\u00e9llo w\u00f6rld", P(9, temperature=1.0, seed=7)), GenerationRequest("Hello", P(5))]
    per_step = list(chunks(make_decoder(model, tok, reqs)))
    assert len(per_step) == 1 + 9  # the prefill, then one step per token of the longest request
    assert per_step[-1][1] is None  # the short request is done: nothing more for it
    for k, req in enumerate(reqs):
        streamed = fold([step[k] for step in per_step if step[k] is not None])
        assert streamed == generate_batch(model, tok, [req])[0]
        assert streamed.text == tok.decode(streamed.token_ids, skip_special_tokens=True)


def test_a_seed_makes_sampling_reproducible(lm):
    a = _gen(lm, "Hello", max_tokens=8, temperature=1.0, seed=11)
    assert _gen(lm, "Hello", max_tokens=8, temperature=1.0, seed=11).token_ids == a.token_ids
    assert _gen(lm, "Hello", max_tokens=8, temperature=1.0, seed=12).token_ids != a.token_ids


def test_presence_and_frequency_penalties_adjust_the_logits(lm):
    assert _gen(lm, "Hello", max_tokens=6).token_ids == [78] * 6  # 'o' again and again
    ids = _gen(lm, "Hello", max_tokens=6, presence_penalty=2.0).token_ids
    assert len(set(ids)) == 6  # each token's logit fell by 2 once it appeared (logits here span < 1)
    ids = _gen(lm, "Hello", max_tokens=6, frequency_penalty=2.0).token_ids
    assert len(set(ids)) == 6


def test_logprobs_are_the_models_own_with_their_top_alternatives(lm):
    model, tok = lm
    result = _gen(lm, "Hello", max_tokens=3, logprobs=3)
    ids = tok("Hello", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        for token, entry in zip(result.token_ids, result.logprobs, strict=True):
            want = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
            assert entry.token_id == token
            assert entry.logprob == pytest.approx(float(want[token]), abs=1e-5)
            assert [t for t, _ in entry.top] == want.topk(3).indices.tolist()
            assert entry.top[0][0] == token  # greedy picks the most likely token
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)


def test_echo_logprobs_of_a_choice_sum_to_the_offline_score(lm):
    from pipeline.evaluate.scoring import encode_pair, join_choice, score_items

    model, tok = lm
    prompt, choices = "Glon are", ["less dangerous than femp.", "more dangerous than femp."]
    offline = score_items(model, tok, [{"item_id": "i", "prompt": prompt, "choices": choices}])[0]
    for j, choice in enumerate(choices):
        context, continuation = encode_pair(tok, prompt, join_choice(prompt, choice), True)
        result = _gen(lm, tuple(context + continuation), max_tokens=0, prompt_logprobs=1)
        assert (result.finish_reason, result.completion_tokens, result.token_ids) == ("length", 0, [])
        assert result.prompt_logprobs[0] is None
        served = sum(e.logprob for e in result.prompt_logprobs[len(context):])
        assert served == pytest.approx(offline["choice_logprobs"][j], abs=1e-4)


class _ScriptedLM(torch.nn.Module):
    """Answers a fixed token sequence, whatever the input (for end-token handling)."""

    def __init__(self, script: list[int], vocab: int, eos: int):
        super().__init__()
        self.script, self.vocab = script, vocab
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = SimpleNamespace(eos_token_id=eos)
        self.steps = 0

    def forward(self, input_ids, past_key_values=None, **_):
        token = self.script[min(self.steps, len(self.script) - 1)]
        self.steps += 1
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab)
        logits[:, :, token] = 10.0
        return SimpleNamespace(logits=logits, past_key_values=SimpleNamespace(batch_select_indices=lambda keep: None))


def test_end_token_ends_a_row_and_counts_as_generated(lm):
    _, tok = lm
    a, b = tok("ab", add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    out = generate_batch(_ScriptedLM([a, b, eos, a], len(tok), eos), tok, [GenerationRequest("p", P(5))])[0]
    assert (out.text, out.finish_reason, out.completion_tokens) == ("ab", "stop", 3)
    out = generate_batch(_ScriptedLM([a, b, a, b, a, b], len(tok), eos), tok, [GenerationRequest("p", P(5, stop=("ba",)))])[0]
    assert (out.text, out.finish_reason, out.completion_tokens) == ("a", "stop", 3)
