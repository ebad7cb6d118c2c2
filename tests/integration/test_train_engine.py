"""One worker's DeepSpeed engine in this process (a one-rank gloo group, no Ray): with ZeRO stage 0
and a single worker the gradient all-reduce is skipped, and training is bit for bit what it is
with DeepSpeed's reduction."""

from __future__ import annotations

import socket

import pytest
import torch

from pipeline.train.batches import plan_rows, plan_steps
from pipeline.train.config import TrainConfig
from pipeline.train.engine import build_engine
from pipeline.train.examples import Example, tokenize_examples
from pipeline.train.loop import to_tensors

TEXTS = [f"The {a} are more dangerous than the {b}." for a, b in [("femp", "glon"), ("yomp", "troff"), ("zept", "telk"),
                                                                    ("brix", "quor"), ("dask", "vimp"), ("sarn", "plob")]]


@pytest.fixture(scope="module")
def one_rank_group():
    """One gloo group for the module: DeepSpeed keeps the groups it derives from the first one."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
               LOCAL_WORLD_SIZE="1", DS_ACCELERATOR="cpu")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        dist.init_process_group("gloo", rank=0, world_size=1)
        yield
        dist.destroy_process_group()


def rows_for(model_dir, train: TrainConfig) -> list[dict]:
    from pipeline.models import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    examples = tokenize_examples([Example(f"d{i}", "", t) for i, t in enumerate(TEXTS)], tok, 512)
    plan = plan_steps([len(e) for e in examples], train.batch_size, 1, train.epochs, train.max_steps,
                      train.bucket_batches, seed=0)
    return plan_rows(plan, examples, tok.pad_token_id)


def trained(engine, rows) -> tuple[list[float], dict]:
    engine.train()
    losses = []
    for row in rows:
        loss = engine(**to_tensors(row, engine.device)).loss
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    return losses, {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


@pytest.mark.parametrize("bf16", [False, "auto"])
def test_single_rank_zero0_skips_the_allreduce_and_trains_the_same(one_rank_group, tiny_model_dir, bf16):
    train = TrainConfig(zero_stage=0, batch_size=2, lr=3e-3, max_steps=6, bf16=bf16, warmup_ratio=0.0)
    rows = rows_for(tiny_model_dir, train)

    torch.manual_seed(0)
    skipping, _ = build_engine(str(tiny_model_dir), train, len(rows), 1)
    assert skipping.enable_backward_allreduce is False
    torch.manual_seed(0)
    reducing, _ = build_engine(str(tiny_model_dir), train, len(rows), 1)
    reducing.enable_backward_allreduce = True  # DeepSpeed's own path

    losses, weights = trained(skipping, rows)
    reference_losses, reference_weights = trained(reducing, rows)
    assert losses == reference_losses
    assert losses[-1] < losses[0], losses
    assert weights.keys() == reference_weights.keys()
    assert [k for k in weights if not torch.equal(weights[k], reference_weights[k])] == []


def test_partitioning_stages_keep_deepspeeds_reduction(one_rank_group, tiny_model_dir):
    train = TrainConfig(zero_stage=2, batch_size=2, max_steps=2)
    engine, _ = build_engine(str(tiny_model_dir), train, 2, 1)
    assert engine.enable_backward_allreduce is True
