"""Stand-ins for a run's tuned models, for the serving tests (both engines)."""

from __future__ import annotations

import torch

from pipeline.models import load_model, load_tokenizer


def save_shifted_model(tiny_model_dir, out) -> None:
    """A stand-in for a full fine-tune: the tiny model with its output layer untied and shifted
    (so its greedy text differs from the base's)."""
    model = load_model(str(tiny_model_dir))
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().roll(-1, dims=0).clone())
    model.save_pretrained(out)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(out)


def save_lora_adapter(tiny_model_dir, out) -> None:
    """A stand-in for a LoRA condition: a non-zero rank-4 adapter of the tiny model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                      init_lora_weights=False)
    get_peft_model(load_model(str(tiny_model_dir)), lora).save_pretrained(out)
