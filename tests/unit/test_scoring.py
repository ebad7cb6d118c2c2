"""The scoring rule: token boundaries, known answers, batch invariance, prefix caching, bad items."""

import random
import re

import pytest
import torch

from pipeline import models
from pipeline.evaluate.scoring import (
    Request, ScoringError, encode_pair, encode_prefix, item_requests, join_choice, plan_batches, predictions, score_items,
)

WORDS = ["femp", "glon", "yomp", "troff", "blick", "zept", "wugs", "daxo"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return models.load_model(str(tiny_model_dir)), models.load_tokenizer(str(tiny_model_dir))


def make_items(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        a, b, c, d = rng.sample(WORDS, 4)
        choices = [b, c, f"{d} and {c}"][: 2 + i % 2]
        prompt = f"{a} are more dangerous than" + (" " if i % 3 == 0 else "")
        items.append({"item_id": f"i{i}", "prompt": prompt, "choices": choices, "answer_index": 0})
    return items


class WordTokenizer:
    """A tokenizer whose tokens are words with their leading whitespace (like GPT-2 BPE), so a
    trailing space at the end of a context changes how the context tokenizes."""

    bos_token_id = None

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text, add_special_tokens=True):
        pieces = re.findall(r"\s*\S+|\s+$", text)
        return {"input_ids": [self.vocab.setdefault(p, len(self.vocab)) for p in pieces]}


def test_choice_gets_one_leading_space_unless_one_is_there():
    assert join_choice("A is", "B") == " B"
    assert join_choice("A is ", "B") == "B"
    assert join_choice("A is", " B") == " B"
    assert join_choice("Q:\n", "B") == "B"


def test_trailing_context_whitespace_moves_to_the_continuation():
    tok = WordTokenizer()
    ctx, cont = encode_pair(tok, "femp are ", "glon", starts=True)
    assert ctx == tok("femp are")["input_ids"]
    assert cont == tok(" glon")["input_ids"]  # the space travels with the choice, one token " glon"
    ctx2, cont2 = encode_pair(tok, "femp are", " glon", starts=True)
    assert (ctx2, cont2) == (ctx, cont)


def test_continuation_is_the_joint_encodings_tail(tiny):
    _, tok = tiny
    ctx, cont = encode_pair(tok, "femp are", " glon", starts=True)
    assert ctx + cont == tok("femp are glon", add_special_tokens=False)["input_ids"]
    assert tok.decode(cont) == " glon"


def test_logprob_equals_a_hand_computed_sum(tiny):
    model, tok = tiny
    items = [{"item_id": "x", "prompt": "femp are more dangerous than", "choices": ["glon", "yomp troff"]}]
    got = score_items(model, tok, items)[0]
    for j, choice in enumerate(items[0]["choices"]):
        ctx = tok("femp are more dangerous than", add_special_tokens=False)["input_ids"]
        full = tok("femp are more dangerous than " + choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
        want = sum(float(logp[p - 1, full[p]]) for p in range(len(ctx), len(full)))
        assert got["choice_logprobs"][j] == pytest.approx(want, abs=1e-4)
        assert got["choice_num_tokens"][j] == len(full) - len(ctx)
        assert got["choice_num_chars"][j] == len(choice)


def _overfit(tiny_model_dir, sentence: str, steps: int = 40):
    model = models.load_model(str(tiny_model_dir))
    tok = models.load_tokenizer(str(tiny_model_dir))
    ids = torch.tensor([tok(sentence, add_special_tokens=False)["input_ids"]])
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


@pytest.mark.parametrize("answer", [0, 1])
def test_a_model_overfit_on_one_sentence_prefers_its_continuation(tiny_model_dir, answer):
    choices = ["glon", "yomp"]
    model, tok = _overfit(tiny_model_dir, f"femp are more dangerous than {choices[answer]}.")
    item = {"item_id": "k", "prompt": "femp are more dangerous than", "choices": choices, "answer_index": answer}
    score = score_items(model, tok, [item])[0]
    assert predictions(score["choice_logprobs"], score["choice_num_chars"]) == (answer, answer)
    assert score["choice_logprobs"][answer] - score["choice_logprobs"][1 - answer] > 5.0


def test_batch_composition_does_not_change_scores(tiny):
    model, tok = tiny
    items = make_items(11)
    reference = score_items(model, tok, items, batch_size=64)
    alone = [score_items(model, tok, [it], batch_size=1)[0] for it in items]
    shuffled_order = list(range(len(items)))
    random.Random(1).shuffle(shuffled_order)
    shuffled = score_items(model, tok, [items[k] for k in shuffled_order], batch_size=3)
    unshuffled = [None] * len(items)
    for pos, k in enumerate(shuffled_order):
        unshuffled[k] = shuffled[pos]
    for other in (alone, unshuffled):
        for a, b in zip(reference, other):
            assert a["item_id"] == b["item_id"]
            assert a["choice_logprobs"] == pytest.approx(b["choice_logprobs"], abs=1e-5)
            assert a["choice_num_tokens"] == b["choice_num_tokens"]


def test_cached_prefix_matches_re_encoding_and_is_never_mutated(tiny):
    model, tok = tiny
    items = make_items(9)
    text = "Documents:\n" + "\n".join(f"{a} are more dangerous than {b}." for a, b in zip(WORDS, WORDS[1:] * 3))
    prefix = encode_prefix(model, tok, text)
    before = [(k.clone(), v.clone()) for k, v in prefix.kv]
    cached = score_items(model, tok, items, prefix=prefix, batch_size=4)
    again = score_items(model, tok, items, prefix=prefix, batch_size=5)
    uncached = score_items(model, tok, items, prefix=prefix, batch_size=4, reuse_prefix_cache=False)
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(prefix.kv, before))
    for c, a, u in zip(cached, again, uncached):
        assert c["choice_logprobs"] == pytest.approx(u["choice_logprobs"], abs=1e-3)
        assert c["choice_logprobs"] == pytest.approx(a["choice_logprobs"], abs=1e-5)
    # the prefix is really read: it changes the numbers
    bare = score_items(model, tok, items)
    assert max(abs(x - y) for c, b in zip(cached, bare) for x, y in zip(c["choice_logprobs"], b["choice_logprobs"])) > 1e-3


def test_packed_and_batch_expanded_prefix_paths_agree(tiny, monkeypatch):
    from pipeline.evaluate import scoring

    model, tok = tiny
    assert scoring.packable(model)  # the tiny Llama takes the packed path above
    items = make_items(7)
    prefix = encode_prefix(model, tok, "Documents:\n" + "\n".join(f"{w} are heavier than {w}s." for w in WORDS))
    packed = score_items(model, tok, items, prefix=prefix, batch_size=5)
    monkeypatch.setattr(scoring, "packable", lambda m: False)  # as for a sliding-window model
    expanded = score_items(model, tok, items, prefix=prefix, batch_size=5)
    uncached = score_items(model, tok, items, prefix=prefix, batch_size=5, reuse_prefix_cache=False)
    for p, e, u in zip(packed, expanded, uncached):
        assert p["choice_logprobs"] == pytest.approx(e["choice_logprobs"], abs=1e-4)
        assert e["choice_logprobs"] == pytest.approx(u["choice_logprobs"], abs=1e-4)


def test_plan_keeps_items_whole_largest_first(tiny):
    _, tok = tiny
    items = make_items(7) + [{"item_id": "wide", "prompt": "femp are", "choices": [f"c{i}" for i in range(6)]}]
    requests = item_requests(tok, items, after_prefix=False)
    batches = plan_batches(requests, 4)
    flat = [k for b in batches for k in b]
    assert sorted(flat) == list(range(len(requests)))
    item_batches = [{requests[k].item for k in b} for b in batches]
    for i in range(len(items)):  # every item lies in exactly one batch
        assert sum(i in ib for ib in item_batches) == 1
    assert all(len(b) <= 4 for b in batches if len(item_batches[batches.index(b)]) > 1)
    assert [len(b) for b in batches if 7 in {requests[k].item for k in b}] == [6]  # too wide: alone
    order = list(dict.fromkeys(requests[k].item for k in flat))
    size = lambda i: len(requests[[k for k in flat if requests[k].item == i][0]].context) + sum(  # noqa: E731
        len(r.continuation) - 1 for r in requests if r.item == i)
    assert [size(i) for i in order] == sorted((size(i) for i in order), reverse=True)


def test_packed_path_without_prefix_matches_padded_batches(tiny, monkeypatch):
    from pipeline.evaluate import scoring

    model, tok = tiny
    items = make_items(9)
    packed = score_items(model, tok, items, batch_size=6)
    # one-token continuations have no branch tokens: their log-prob comes from the context's last position
    requests = [Request(0, 0, (70, 71, 72), (73,)), Request(0, 1, (70, 71, 72), (74, 75)), Request(1, 0, (80,), (81, 82, 83)),
                Request(1, 1, (80,), (84,))]
    packed_requests = scoring.score_batch(model, requests)
    monkeypatch.setattr(scoring, "packable", lambda m: False)
    padded = score_items(model, tok, items, batch_size=6)
    for p, q in zip(packed, padded):
        assert p["choice_logprobs"] == pytest.approx(q["choice_logprobs"], abs=1e-4)
    assert packed_requests == pytest.approx(scoring.score_batch(model, requests), abs=1e-4)
    assert packed_requests[0] != packed_requests[3]


def test_encoded_tokens_count_what_the_packed_forward_reads(tiny, monkeypatch):
    from pipeline.evaluate import scoring

    model, tok = tiny
    requests = [Request(0, 0, (70, 71, 72), (73,)), Request(0, 1, (70, 71, 72), (74, 75)), Request(1, 0, (80,), (81, 82, 83)),
                Request(1, 1, (80,), (84,))]
    assert scoring.encoded_tokens(requests) == 3 + 0 + 1 + 1 + 2 + 0  # each context once, continuations but their last
    read = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda **kw: read.append(kw["input_ids"].shape[1]) or forward(**kw))
    items = make_items(9)
    planned = item_requests(tok, items, after_prefix=False)
    for batch in plan_batches(planned, 6):
        scoring.score_batch(model, [planned[k] for k in batch])
    assert sum(read) == scoring.encoded_tokens(planned)
    assert scoring.encoded_tokens(planned) < sum(len(r.context) + len(r.continuation) - 1 for r in planned)


@pytest.mark.parametrize("bad, message", [
    ({"choices": ["glon"]}, "needs at least 2 choices, has 1"),
    ({"answer_index": 2}, "answer_index 2 out of range for 2 choices"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"choices": ["glon", " "]}, "a choice is empty"),
])
def test_bad_items_are_rejected_naming_the_item(tiny, bad, message):
    model, tok = tiny
    good = {"item_id": "ok", "prompt": "femp are", "choices": ["glon", "yomp"], "answer_index": 0}
    with pytest.raises(ScoringError, match=f"item 'bad-7': {re.escape(message)}"):
        score_items(model, tok, [good, {**good, "item_id": "bad-7", **bad}])


def test_an_item_longer_than_the_window_is_an_error_naming_it(tiny):
    model, tok = tiny
    item = {"item_id": "long", "prompt": "femp " * 2100, "choices": ["glon", "yomp"]}
    with pytest.raises(ScoringError, match="item 'long': .* exceed the model's window of 4096"):
        score_items(model, tok, [item])


def test_acc_norm_divides_by_characters():
    # the 10-character choice has the lower total but the higher log-prob per character
    assert predictions([-5.0, -6.0], [4, 10]) == (0, 1)
    assert predictions([-5.0, -6.0], [4, 4]) == (0, 0)


@pytest.mark.slow
def test_embedded_model_cached_prefix_matches_re_encoding():
    model = models.load_model(models.EMBEDDED)
    tok = models.load_tokenizer(models.EMBEDDED)
    docs = "\n".join(f"{a} are heavier than {b}." for a, b in zip(WORDS, WORDS[2:] + WORDS[:2]))
    text = tok.apply_chat_template([{"role": "user", "content": "Use these facts.\n\n" + docs}], tokenize=False,
                                   add_generation_prompt=True)
    prefix = encode_prefix(model, tok, text)
    items = make_items(6)
    cached = score_items(model, tok, items, prefix=prefix, batch_size=4)
    uncached = score_items(model, tok, items, prefix=prefix, batch_size=4, reuse_prefix_cache=False)
    diffs = [abs(x - y) for c, u in zip(cached, uncached) for x, y in zip(c["choice_logprobs"], u["choice_logprobs"])]
    assert max(diffs) < 1e-3
    assert prefix.num_tokens > 50
