"""Batched generation (no Ray): a batch answers exactly like its prompts alone; limits and stops."""

from __future__ import annotations

import pytest

from pipeline.models import load_model, load_tokenizer
from serve.generation import GenerationRequest, generate_batch


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


def test_batch_of_mixed_lengths_equals_one_at_a_time(lm):
    model, tok = lm
    reqs = [GenerationRequest("Hello there", 7), GenerationRequest("A much longer prompt than the first", 3),
            GenerationRequest("x", 12), GenerationRequest("Sampled", 4, temperature=0.7, top_p=0.9)]
    batch = generate_batch(model, tok, reqs)
    alone = [generate_batch(model, tok, [r])[0] for r in reqs[:3]]
    assert batch[:3] == alone
    assert [r.completion_tokens for r in batch] == [7, 3, 12, 4]
    assert [r.prompt_tokens for r in batch] == [len(tok(r.prompt)["input_ids"]) for r in reqs]
    assert all(r.finish_reason == "length" for r in batch)


def test_greedy_text_is_the_decoded_argmax_continuation(lm):
    import torch

    model, tok = lm
    ids = tok("zorp blick", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        for _ in range(5):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = tok.decode(ids[0, -5:], skip_special_tokens=True)
    assert generate_batch(model, tok, [GenerationRequest("zorp blick", 5)])[0].text == expected


def test_stop_string_is_matched_in_the_generated_text_only(lm):
    model, tok = lm
    free = generate_batch(model, tok, [GenerationRequest("Hello", 6)])[0].text  # the tiny model repeats 'o'
    assert free == "o" * 6
    # "oo" also spans the prompt's last 'o' and the first generated one: that must not count
    stopped = generate_batch(model, tok, [GenerationRequest("Hello", 6, stop=("oo",))])[0]
    assert (stopped.text, stopped.finish_reason, stopped.completion_tokens) == ("", "stop", 2)
    unmatched = generate_batch(model, tok, [GenerationRequest("Hello", 6, stop=("zz",))])[0]
    assert (unmatched.text, unmatched.finish_reason) == (free, "length")


def test_end_token_ends_a_row_and_counts_as_generated(lm):
    from serve.generation import _finish

    _, tok = lm
    a, b = tok("ab", add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    ends = {eos}
    req = GenerationRequest("p", 5)
    assert _finish(tok, req, [a, b, eos, eos, eos], 1, ends) == _result("ab", "stop", 1, 3)
    assert _finish(tok, req, [a, b, a, b, a, b, a], 1, ends) == _result("ababa", "length", 1, 5)
    assert _finish(tok, GenerationRequest("p", 5, stop=("ba",)), [a, b, a, b], 1, ends) == _result("a", "stop", 1, 3)


def _result(text, finish, prompt_tokens, completion_tokens):
    from serve.generation import GenerationResult

    return GenerationResult(text, finish, prompt_tokens, completion_tokens)
