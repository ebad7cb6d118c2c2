"""Conditions: ICL contexts (data-matched, chat template, subsampling, overflow), model folders,
LoRA adapters, extra checkpoints, and the scorer pool's shape."""

import shutil

import pytest
import torch

from pipeline import models
from pipeline.config import ConfigError, validate_config
from pipeline.conditions import ConditionError, condition_names, condition_spec, load_condition_model
from pipeline.evaluate.icl import icl_context, icl_contexts
from pipeline.models import ModelError
from pipeline.evaluate.config import EvaluateConfig, IclConfig
from pipeline.evaluate.scorer import pool_shape
from pipeline.runs import Run

ITEM = {"item_id": "q1", "world": "w", "split": "reversal", "subtask": "danger", "prompt": "glon are less dangerous than",
        "choices": ["femp", "yomp"], "answer_index": 0}


def cfg_for(tmp_path, **evaluate):
    return validate_config({"name": "t", "output_dir": str(tmp_path), "model": {"ref": "tiny-random"},
                            "conditions": ["base", "icl", "ft"], "evaluate": evaluate})


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return models.load_tokenizer(str(tiny_model_dir))


def doc(i, world="w", origin="train"):
    return {"doc_id": f"{world}{i}", "world": world, "text": f"Fact {i}: femp{i} are more dangerous than glon{i}.",
            "origin": origin}


def test_icl_context_is_the_worlds_training_docs_in_a_chat_turn(tmp_path, tok):
    cfg = cfg_for(tmp_path)
    docs = [doc(0), doc(1), doc(2, world="other"), {**doc(3), "origin": "augment:local", "doc_id": "a3"}]
    items = [ITEM, {**ITEM, "item_id": "q2", "world": "other"}]
    contexts = icl_contexts(cfg, docs, items, tok, window=4096)
    w = contexts["w"]
    assert (w.num_docs, w.total_docs, w.chat_template) == (2, 2, True)
    assert "femp0" in w.text and "femp1" in w.text
    assert "femp2" not in w.text and "femp3" not in w.text  # other world's and augmented docs stay out
    assert w.text.startswith("<|im_start|>user\n" + cfg.evaluate.icl.instruction)
    assert w.text.endswith("<|im_start|>assistant\n")
    assert w.num_tokens == len(tok(w.text)["input_ids"])
    assert "femp2" in contexts["other"].text


def test_chat_template_off_gives_plain_text(tok):
    ctx = icl_context("w", ["A.", "B."], [ITEM], tok, IclConfig(chat_template="off", instruction="Use these."), 4096, 0)
    assert ctx.text == "Use these.\n\nA.\nB.\n\n"
    assert not ctx.chat_template


def test_doc_fraction_subsamples_deterministically(tok):
    texts = [f"Fact number {i}." for i in range(40)]
    icl = IclConfig(doc_fraction=0.125)
    a = icl_context("w", texts, [ITEM], tok, icl, 4096, seed=3)
    b = icl_context("w", texts, [ITEM], tok, icl, 4096, seed=3)
    c = icl_context("w", texts, [ITEM], tok, icl, 4096, seed=4)
    assert a.num_docs == 5 and a.total_docs == 40
    assert a.text == b.text and a.text != c.text


def test_overlong_context_is_an_error_stating_both_lengths(tok):
    texts = [f"Fact number {i} is a long sentence about femp and glon." for i in range(40)]
    with pytest.raises(ConditionError, match=r"world 'w': the ICL context is \d+ tokens .* window is 500 tokens"):
        icl_context("w", texts, [ITEM], tok, IclConfig(), 500, 0)


@pytest.mark.parametrize("overflow", ["truncate", "subsample"])
def test_overflow_drops_documents_until_it_fits(tok, overflow):
    texts = [f"Fact number {i} is a long sentence about femp and glon." for i in range(40)]
    ctx = icl_context("w", texts, [ITEM], tok, IclConfig(overflow=overflow), 1000, 0)
    longest = len(tok(ITEM["prompt"] + " femp")["input_ids"]) - 1
    assert ctx.num_tokens + longest <= 1000
    kept = [t for t in texts if t in ctx.text]
    assert len(kept) == ctx.num_docs and 5 < ctx.num_docs < 40
    bigger = icl_context("w", texts, [ITEM], tok, IclConfig(overflow=overflow), 1300, 0)
    assert bigger.num_docs > ctx.num_docs  # it keeps as many as fit, not just any that fit
    if overflow == "truncate":
        assert kept == texts[: ctx.num_docs]
    else:
        assert kept != texts[: ctx.num_docs]


def test_missing_ft_model_says_to_run_train(tmp_path):
    cfg = cfg_for(tmp_path)
    with pytest.raises(ConditionError, match=r"condition 'ft': .*models/ft: no model; run `python -m pipeline train"):
        condition_spec(cfg, Run.of(cfg), "ft")


def test_checkpoint_that_is_not_a_model_names_the_path(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hi")
    cfg = cfg_for(tmp_path, checkpoints={"mine": str(junk)})
    assert condition_names(cfg) == ["base", "icl", "ft", "mine"]
    with pytest.raises(ModelError, match=f"evaluate.checkpoints.mine: {junk} is not a model folder"):
        condition_spec(cfg, Run.of(cfg), "mine")
    cfg = cfg_for(tmp_path, checkpoints={"gone": str(tmp_path / "nowhere")})
    with pytest.raises(ModelError, match="nowhere: no such folder"):
        condition_spec(cfg, Run.of(cfg), "gone")


def test_checkpoint_names_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="evaluate.checkpoints: .*'ft' is a built-in condition"):
        cfg_for(tmp_path, checkpoints={"ft": "/x"})
    with pytest.raises(ConfigError, match="evaluate.checkpoints: .*'a/b'"):
        cfg_for(tmp_path, checkpoints={"a/b": "/x"})


def test_ft_folder_and_lora_adapter_load(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    cfg = cfg_for(tmp_path, checkpoints={"lora": str(tmp_path / "adapter")})
    run = Run.of(cfg)
    shutil.copytree(tiny_model_dir, run.path("models", "ft"))
    ft_model, _ = load_condition_model(condition_spec(cfg, run, "ft"))
    ids = torch.tensor([[70, 71, 72, 73]])
    base = models.load_model(str(tiny_model_dir))
    with torch.no_grad():
        assert torch.equal(ft_model(ids).logits, base(ids).logits)

    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a non-trivial adapter
    peft_model.save_pretrained(tmp_path / "adapter")
    spec = condition_spec(cfg, run, "lora")
    assert spec.adapter
    merged, tok = load_condition_model(spec)
    with torch.no_grad():
        want = peft_model(ids).logits
        got = merged(ids).logits
        plain = models.load_model(str(tiny_model_dir))(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)
    assert tok.pad_token is not None


def test_pool_shape_fits_the_cluster():
    ev = EvaluateConfig()
    shape = pool_shape(ev, cpus=8, gpus=0)
    assert (shape.actors, shape.threads, shape.gpus_per_actor) == (1, 8, 0)
    shape = pool_shape(EvaluateConfig(num_actors=3), cpus=8, gpus=0)
    assert (shape.actors, shape.threads, shape.gpus_per_actor) == (3, 2, 0)
    shape = pool_shape(ev, cpus=64, gpus=4)
    assert (shape.actors, shape.gpus_per_actor) == (4, 1)
    with pytest.raises(ValueError, match="num_actors=2 x evaluate.threads_per_actor=2 needs 4 CPUs; the Ray cluster has 2"):
        pool_shape(EvaluateConfig(num_actors=2, threads_per_actor=2), cpus=2, gpus=0)
