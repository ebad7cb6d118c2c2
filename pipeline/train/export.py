"""Export of a trained model: gather the weights in the workers, then write `<run>/models/<condition>/`.

In the workers (`write_trained_model`, called on every rank): the weights are gathered one
module at a time (ZeRO-3 shards are all-gathered; stages 0-2 hold them whole already) and rank
0 writes them with `save_pretrained` as safetensors, in the dtype they were trained in. With
LoRA, `lora.export` chooses:
- "merged": the adapters are folded into a fresh float32 copy of the base weights
  (`merge_and_unload`) and a plain model folder is written (config.json, model.safetensors);
- "adapter": peft's adapter_config.json + adapter_model.safetensors only; adapter_config.json
  names the base model folder, so `AutoModelForCausalLM.from_pretrained(folder)` (with peft
  installed) or `PeftModel.from_pretrained(base, folder)` loads base + adapter.

On the driver (`finalize`): the reported folder is copied into a temporary folder, the tokenizer
and `train_config.json` (the training config, the data fingerprint and the fit's numbers) are
added, and the folder is published into run storage (`pipeline.storage.publish_dir`: renamed into
place locally; uploaded with its CONTENTS.json last on an object store): a model folder is
complete or absent, never taken for complete while half-written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline import storage
from pipeline.records import atomic_dir
from pipeline.storage import AnyPath
from pipeline.train.config import TrainConfig

TRAIN_RECORD = "train_config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def full_state_dict(module, rank: int) -> dict | None:
    """Every parameter and persistent buffer of `module`, whole, on rank 0 (None elsewhere).
    Call on every rank: under ZeRO-3 each module's shards are all-gathered in turn."""
    import deepspeed

    out: dict | None = {} if rank == 0 else None
    for prefix, sub in module.named_modules():
        params = list(sub.parameters(recurse=False))
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if out is None:
                continue
            dot = f"{prefix}." if prefix else ""
            for name, p in sub.named_parameters(recurse=False):
                out[dot + name] = p.detach().to("cpu", copy=True)
            for name, b in sub.named_buffers(recurse=False):
                if name not in sub._non_persistent_buffers_set:
                    out[dot + name] = b.detach().to("cpu", copy=True)
    if out is not None:
        empty = [k for k, v in out.items() if v.numel() == 0]
        if empty:
            raise RuntimeError(f"gathered state dict has empty tensors (ZeRO gather failed): {empty[:3]}")
    return out


def write_trained_model(engine, train: TrainConfig, base_path: str, out_dir: str, rank: int) -> None:
    """Write the trained weights to `out_dir` on rank 0; every rank must call it."""
    module = engine.module
    if train.lora is None:
        state = full_state_dict(module, rank)
        if rank == 0:
            module.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
        return
    if rank != 0:
        return  # LoRA runs at ZeRO stage <= 2: rank 0 holds every weight whole
    if train.lora.export == "adapter":
        module.save_pretrained(out_dir, safe_serialization=True)
        return
    write_merged_lora(module, train, base_path, out_dir)


def write_merged_lora(peft_module, train: TrainConfig, base_path: str, out_dir: str) -> None:
    """Fold the trained adapters into a fresh float32 copy of the base model and save it."""
    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from pipeline.train.engine import peft_lora_config

    adapter = {k: v.detach().to("cpu", torch.float32) for k, v in get_peft_model_state_dict(peft_module).items()}
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True)
    fresh = get_peft_model(base, peft_lora_config(train))
    result = set_peft_model_state_dict(fresh, adapter)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise RuntimeError(f"adapter weights do not fit the base model: {unexpected[:3]}")
    merged = fresh.merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)


def is_complete(folder: AnyPath) -> bool:
    """A model folder written by `finalize`: its CONTENTS.json (written last) lists the training
    record and weights, and every listed file is there with its recorded size."""
    contents = storage.read_contents(folder)
    return (contents is not None and TRAIN_RECORD in contents and any(w in contents for w in WEIGHTS)
            and not storage.verify_folder(folder, contents))


def saved_record(folder: AnyPath) -> dict | None:
    return json.loads((folder / TRAIN_RECORD).read_text()) if is_complete(folder) else None


def finalize(exported: Path, target: AnyPath, tokenizer, record: dict) -> AnyPath:
    """Copy the exported weights, add tokenizer + train_config.json, rename onto `target`."""
    with atomic_dir(target) as tmp:
        shutil.copytree(exported, tmp, dirs_exist_ok=True)
        if not any((tmp / w).is_file() for w in WEIGHTS):
            raise RuntimeError(f"{exported}: the exported folder has no weights ({', '.join(WEIGHTS)})")
        tokenizer.save_pretrained(tmp)
        (tmp / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return target
