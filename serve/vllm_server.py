"""Where a vLLM replica of Ray Serve LLM gets its weights (engine `vllm`, see `serve.vllm_plan`).

- `ResolveModelOnNode`, the `LLMConfig.callback_config` of every served model: before vLLM
  starts, it turns the model's reference into a folder on the replica's own node with
  `pipeline.models.local_model_folder`, as Ray Train's workers do (an embedded model converted
  once per node, a folder in run storage fetched once per node into its cache and checked
  against its CONTENTS.json, a hub id looked up in the local Hugging Face cache), and points the
  engine at it. A replica's GPUs are on that one node (STRICT_PACK placement).
- `RunAdapterLoader`, the LoRA loader of the base's replicas: the model id `base:<condition>` is
  the adapter `models/<condition>/`, read in place from a local or shared disk, or fetched from
  run storage once per node (`pipeline.models.fetch_folder`, checked against CONTENTS.json). Ray
  Serve LLM's own loader takes only s3/gs/azure URIs and needs boto3 for s3.

Imports Ray Serve LLM's base classes only (no vLLM), so it loads on any machine.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fastapi import HTTPException
from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.llm._internal.common.models import global_id_manager
from ray.llm._internal.common.utils.lora_utils import get_lora_id
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader

log = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"


class ResolveModelOnNode(CallbackBase):
    """callback_kwargs: {"model": a ModelConfig as a dict}."""

    async def on_before_node_init(self) -> None:
        from pipeline.models import local_model_folder
        from pipeline.section import ModelConfig

        model = ModelConfig.model_validate(self.kwargs["model"])
        folder = await asyncio.to_thread(local_model_folder, model)
        engine = self.llm_config.get_engine_config()
        engine.hf_model_id, engine.mirror_config = str(folder), None  # a local folder: nothing left to download
        log.info("%s: serving %s from %s", self.llm_config.model_id, model.ref, folder)


class RunAdapterLoader(LoraModelLoader):
    """LoRA adapters of a run (`adapters`: its models/ folder, a local path or a storage URI)."""

    def __init__(self, *, adapters: str, **kwargs):
        super().__init__(**kwargs)
        self.adapters = adapters

    async def load_model_from_config(self, lora_model_id: str, llm_config=None) -> DiskMultiplexConfig:
        if lora_model_id not in self.disk_cache:
            folder = await asyncio.to_thread(self.local_folder, get_lora_id(lora_model_id))
            self.disk_cache[lora_model_id] = DiskMultiplexConfig(
                model_id=lora_model_id, max_total_tokens=None, local_path=str(folder),
                lora_assigned_int_id=global_id_manager.next())
        return self.disk_cache[lora_model_id]

    def local_folder(self, name: str) -> Path:
        """The adapter `name` as a folder on this node; 404 if the run has no such adapter."""
        from pipeline import storage
        from pipeline.models import fetch_folder

        where = storage.location(self.adapters) / name
        if not (where / ADAPTER_CONFIG).is_file():
            raise HTTPException(404, f"model 'base:{name}': no LoRA adapter at {where}")
        return fetch_folder(where) if storage.is_remote(where) else where
