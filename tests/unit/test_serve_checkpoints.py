"""Which models a run serves, and loading a LoRA adapter folder onto the base model (through the
one condition loader that the evaluator uses too)."""

from __future__ import annotations

import shutil

import pytest
import torch

from pipeline.config import RunConfig
from pipeline.models import load_model
from pipeline.runs import Run
from pipeline.conditions import ConditionSpec, load_condition_model
from serve.checkpoints import served_models, tuned_checkpoints, weights_for_condition


@pytest.fixture
def run(tmp_path, tiny_model_dir) -> tuple[RunConfig, Run]:
    cfg = RunConfig(name="r", output_dir=str(tmp_path), model={"ref": str(tiny_model_dir)})
    return cfg, Run.of(cfg)


def test_served_models_are_base_then_tuned_folders_in_report_order(run, tiny_model_dir):
    cfg, r = run
    assert list(served_models(cfg, r)) == ["base"]
    for name in ("ft+oracle", "ft", "my-extra"):
        shutil.copytree(tiny_model_dir, r.path("models", name))
    r.path("models", "ft+local").mkdir()  # an empty folder (a crashed export) is not served
    (r.path("models", "ft+global")).mkdir()
    (r.path("models", "ft+global", "adapter_config.json")).write_text("{}")
    (r.path("models", "ft+local+global")).mkdir()  # config.json without weights: not a model either
    (r.path("models", "ft+local+global", "config.json")).write_text("{}")
    found = served_models(cfg, r)
    assert list(found) == ["base", "ft", "ft+global", "ft+oracle", "my-extra"]
    assert found["ft+global"].adapter and not found["ft"].adapter
    assert found["base"].folder is None and found["ft"].folder == r.path("models", "ft").resolve()
    assert list(tuned_checkpoints(cfg, r)) == ["ft", "ft+global", "ft+oracle", "my-extra"]


def test_icl_and_base_score_with_the_base_weights(run, tiny_model_dir):
    cfg, r = run
    shutil.copytree(tiny_model_dir, r.path("models", "ft"))
    assert [weights_for_condition(c, cfg, r) for c in ("base", "icl", "ft")] == ["base", "base", "ft"]
    with pytest.raises(KeyError):
        weights_for_condition("ft+local", cfg, r)
    with pytest.raises(KeyError):  # the generator's ICL is scored offline only: not a served model
        weights_for_condition("icl-generator", cfg, r)


def test_lora_adapter_is_merged_onto_the_base(run, tiny_model_dir):
    from peft import LoraConfig, PeftModel, get_peft_model

    cfg, r = run
    torch.manual_seed(0)
    lora = LoraConfig(r=2, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(load_model(str(tiny_model_dir)), lora).save_pretrained(r.path("models", "ft"))
    merged, _ = load_condition_model(served_models(cfg, r)["ft"])
    reference = PeftModel.from_pretrained(load_model(str(tiny_model_dir)), str(r.path("models", "ft"))).eval()
    base = load_model(str(tiny_model_dir))
    ids = torch.tensor([[5, 9, 42, 7]])
    with torch.inference_mode():
        got, want, plain = (m(input_ids=ids).logits for m in (merged, reference, base))
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter changed the model


def test_an_adapter_for_another_architecture_names_the_folder(run, tmp_path):
    from pipeline.models import ModelError

    cfg, r = run
    folder = r.path("models", "ft")
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 2, "target_modules": ["no_such_proj"]}')
    with pytest.raises(ModelError, match=str(folder)):
        load_condition_model(ConditionSpec("ft", cfg.model.model_copy(update={"ref": str(folder)}), cfg.model, adapter=True))
