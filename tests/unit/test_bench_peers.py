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


def test_cpu_share_labels_adds_up_per_label_and_windows_the_middle_of_the_fit():
    from bench.ray_cpu_share import WORKER, Snapshot, label, shares, window

    assert label(["ray::TrainController.run", ""], "python") == "ray::TrainController.run"
    assert label(["/venv/bin/python", "-u", "/x/ray/_private/log_monitor.py", "--a"], "python") == "python log_monitor.py"
    assert label(["/opt/ray/gcs_server", "--log_dir=/t"], "gcs_server") == "gcs_server"
    assert label(["python", "-m", "bench.ray_cpu_share", "--steps", "64"], "python") == "python bench.ray_cpu_share"
    assert label([], "kthreadd") == "kthreadd"

    before = Snapshot(10.0, {1: (WORKER, 5.0), 2: ("ray::Idle", 1.0), 3: ("ray::Idle", 2.0), 4: ("gone", 0.0),
                             9: ("old", 3.0)})
    after = Snapshot(30.0, {1: (WORKER, 41.0), 2: ("ray::Idle", 1.2), 3: ("ray::Idle", 2.2), 5: ("new", 9.0),
                            9: ("reused pid", 4.0)})
    # 36 CPU-s in 20 s = 180% of a core; two idle actors 0.4 CPU-s together = 2%; a process that
    # started, ended or whose pid was reused inside the window is left out
    assert shares(before, after) == [(WORKER, 1, 180.0), ("ray::Idle", 2, pytest.approx(2.0))]
    with pytest.raises(ValueError, match="length"):
        shares(after, before)

    snaps = [Snapshot(float(t), {1: (WORKER, t)} if 10 <= t <= 50 else {}) for t in range(0, 61, 5)]
    lo, hi = window(snaps)  # the worker was seen from 10 to 50 s: the middle half is 20-40 s
    assert (lo.at, hi.at) == (20.0, 40.0)
    with pytest.raises(ValueError, match="too short"):
        window(snaps[:3] + [Snapshot(15.0, {1: (WORKER, 1.0)})])
