"""The generation engine a run is served with (`serve.engine`).

- `hf` (default): this package's own deployments (transformers models, `serve.decoding`), on CPU
  or GPU, with the evaluator beside them.
- `vllm`: Ray Serve LLM (`ray.serve.llm`) with vLLM and multiplexed LoRA adapters
  (`serve.vllm_app`), with the same evaluator. It needs the `gpu` extra (`ray[llm]`, `vllm`) where
  the application is built, and CUDA GPUs: on this machine, or on the Ray cluster's workers.
  Without them, choosing it fails fast, before any replica starts, with what is missing and what
  to run instead.
"""

from __future__ import annotations

import importlib.util


class EngineError(RuntimeError):
    """The configured engine cannot run on this machine; the message says why and what to do."""


def require_engine(engine: str, cluster_gpus: float | None = None) -> None:
    """Raise EngineError unless `engine` can serve here. `cluster_gpus`: the connected Ray
    cluster's GPUs (None: no cluster, only this machine's CUDA counts)."""
    if engine == "hf":
        return
    if engine != "vllm":
        raise EngineError(f"serve.engine: unknown engine {engine!r}; use 'hf' or 'vllm'")
    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("the vllm package (pip install '.[gpu]')")
    if not cluster_gpus:
        import torch

        if not torch.cuda.is_available():
            where = "" if cluster_gpus is None else " and the Ray cluster has no GPU"
            missing.append(f"a CUDA GPU (torch.cuda.is_available() is False{where})")
    if missing:
        raise EngineError(f"serve.engine: 'vllm' needs {' and '.join(missing)}; set serve.engine=hf to serve "
                          "with transformers on this machine")
