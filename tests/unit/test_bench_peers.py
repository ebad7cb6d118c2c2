"""The peer benchmarks' comparison logic at tiny size: same work on both sides, same answers.

Speed is not asserted (bench/ measures it); what is asserted is that each side did the same
work: the same chosen answers and log-probs as lm-evaluation-harness, the same greedy tokens as
transformers' `generate`, and the same losses as TRL on the same step plan.
"""

import pytest

from pipeline import models

TINY = "tiny-random"


@pytest.fixture(scope="module")
def tiny():
    return models.load_model(TINY), models.load_tokenizer(TINY)


@pytest.mark.parametrize("context_tokens", [0, 400])
def test_scoring_matches_lm_eval_without_and_with_icl_context(tiny, context_tokens):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (the dev extra installs it)")
    from bench.icl_prefix_cache import build_case
    from bench.peer_scoring import compare

    model, tokenizer = tiny
    context, items = build_case(tokenizer, 400, 4)  # enough facts for 4 items
    assert len(items) == 4
    result = compare(model, tokenizer, items, context if context_tokens else "", batch_size=4)
    assert result["prefix_tokens"] >= context_tokens
    assert result["disagreements"] == [] and result["agreement"] == 1.0
    assert result["max_delta"] < 1e-4
    assert result["ours_s"] > 0 and result["peer_s"] > 0


def test_peer_logprobs_keep_item_and_choice_order(tiny):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (the dev extra installs it)")
    from bench.peer_scoring import peer_logprobs, peer_model

    model, tokenizer = tiny
    items = [{"item_id": "a", "prompt": "Femp is", "choices": ["tall", "short", "red"]},
             {"item_id": "b", "prompt": "Zorn likes", "choices": ["rain", "snow"]}]
    lm = peer_model(model, tokenizer, batch_size=2)
    both = peer_logprobs(lm, items, "")
    assert [len(x) for x in both] == [3, 2]
    assert peer_logprobs(lm, items[1:], "") == [both[1]]  # each value belongs to its own (item, choice)


def test_generation_matches_transformers_generate_with_a_static_cache():
    from bench.peer_generation import compare, local_prompts
    from pipeline.augment.engines import HFEngine
    from pipeline.section import ModelConfig

    model = ModelConfig(ref=TINY)
    prefix, suffixes = local_prompts(model, 3)
    assert len(suffixes) == 3
    engine = HFEngine(model, batch_size=2, threads=1)
    result = compare(engine, models.load_model(model), prefix, suffixes, max_new=4)
    assert result["same"] == 1.0
    assert result["ours_tokens"] == result["peer_tokens"] > 0


def test_plan_examples_unpads_the_step_plan_in_order():
    from bench.peer_training import plan_examples
    from pipeline.train.batches import micro_batch
    from pipeline.train.examples import TokenizedExample

    examples = [TokenizedExample("a", (5, 6, 7), 0), TokenizedExample("b", (8,), 0), TokenizedExample("c", (9, 10), 0)]
    rows = [micro_batch(examples[:2], pad_id=0), micro_batch(examples[2:], pad_id=0)]
    assert plan_examples(rows) == [[5, 6, 7], [8], [9, 10]]


def test_trl_trains_the_same_plan_to_the_same_loss_as_our_step_math(tmp_path):
    pytest.importorskip("trl", reason="TRL is not installed (the bench extra installs it: pip install -e '.[bench]')")
    from bench.peer_training import trl_fit
    from bench.train_throughput import bare_loop, rows_for
    from pipeline.train.config import TrainConfig

    train = TrainConfig(batch_size=4, bf16=False, lr=1e-3, max_steps=3, zero_stage=0)
    rows, _ = rows_for(TINY, 3, 4, 1)
    path = str(models.resolve(TINY))
    theirs = trl_fit(path, train, rows, 1, str(tmp_path))
    ours = bare_loop(path, train, rows, 1)  # the loop DeepSpeed ZeRO-0 matches bit for bit in fp32
    assert theirs["steps"] == 3
    assert theirs["final_loss"] == pytest.approx(ours["final_loss"], rel=1e-3)


def test_step_timer_leaves_the_first_step_out_of_the_steady_rate(monkeypatch):
    from bench import train_throughput

    clock = iter([100.0, 104.0, 105.0, 106.0])  # start, then a 4 s first step and two 1 s steps
    monkeypatch.setattr(train_throughput.time, "perf_counter", lambda: next(clock))
    timer = train_throughput.StepTimer()
    for tokens in (50, 100, 100):
        timer.step(tokens, 0.0)
    r = timer.result()
    assert r["first_step_s"] == 4.0 and timer.seconds == 6.0
    assert r["tokens_per_s"] == 250 / 6 and r["steady_tokens_per_s"] == 100.0
