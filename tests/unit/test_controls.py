"""The controls that must work, on a world the suite can afford: fine-tuned on a handful of
reversals facts, the tiny model learns them (rephrase at the ceiling); fine-tuned on the facts
plus their oracle reversals, it also answers every reversal. A control that states the answer
and misses the ceiling means fine-tuning did not take, and no comparison of augmentations can
be read (docs/controls.md).

The fits run in process with the pipeline's own pieces (world, oracle, examples, step plan,
learning-rate schedule, scoring rule) and a plain torch AdamW in place of the DeepSpeed engine.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from pipeline.augment.oracle import oracle_docs
from pipeline.data.config import ReversalsConfig
from pipeline.evaluate.scoring import predictions, score_items
from pipeline.models import load_model, load_tokenizer
from pipeline.train.batches import micro_batch, plan_steps
from pipeline.train.engine import lr_factor
from pipeline.train.examples import build_examples, condition_docs, tokenize_examples
from pipeline.worlds import reversals

EPOCHS, BATCH, LR = 80, 4, 3e-3


@pytest.fixture(scope="module")
def world():
    cfg = ReversalsConfig(size="demo", n_facts=4, validation_facts=0, articles_per_fact=3)
    docs, items, facts = reversals.build(cfg, 0)
    return docs, items, oracle_docs("reversals", reversals, facts, docs)


def fit_and_score(model_dir, condition: str, world) -> dict[str, float]:
    docs, items, oracle = world
    tok = load_tokenizer(str(model_dir))
    torch.manual_seed(0)
    model = load_model(str(model_dir))
    model.train()
    examples = tokenize_examples(build_examples(condition_docs(condition, docs, oracle), "independent"), tok, 512)
    plan = plan_steps([len(e) for e in examples], BATCH, 1, EPOCHS, None, 16, 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, len(plan), int(0.1 * len(plan)), "cosine"))
    for (batch,) in plan:
        row = micro_batch([examples[i] for i in batch], tok.pad_token_id or 0)
        ids = torch.tensor(row["input_ids"]).view(row["rows"], row["width"])
        mask = (torch.arange(row["width"])[None, :] < torch.tensor(row["lengths"])[:, None]).long()
        labels = torch.tensor(row["labels"]).view(row["rows"], row["width"])
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        scores = score_items(model, tok, items)
    right = defaultdict(list)
    for item, score in zip(items, scores):
        right[item["split"]].append(predictions(score["choice_logprobs"], score["choice_num_chars"])[0] == item["answer_index"])
    return {split: sum(v) / len(v) for split, v in right.items()}


def test_fine_tuning_learns_its_facts_and_the_oracle_teaches_their_reversals(tiny_model_dir, world):
    ft = fit_and_score(tiny_model_dir, "ft", world)
    oracle = fit_and_score(tiny_model_dir, "ft+oracle", world)
    assert ft["rephrase"] == 1.0, ft
    assert oracle == {"rephrase": 1.0, "reversal": 1.0}, oracle
    # without the oracle the reversals are not learned: the control is what lifts them
    assert ft["reversal"] < 1.0, ft
