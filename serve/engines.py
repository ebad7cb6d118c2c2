"""The generation engine a run is served with (`serve.engine`).

- `hf` (default): this package's own deployments (transformers models, `serve.decoding`), on CPU
  or GPU, with the evaluator beside them.
- `vllm`: the GPU path, Ray Serve LLM (`ray.serve.llm`) with vLLM and multiplexed LoRA adapters.
  It needs CUDA and the `gpu` extra (`ray[llm]`, `vllm`), neither of which exists on the CPU
  machines this project is built and tested on, so it is not wired into `build_app` here; choosing
  it fails fast, before any replica starts, with what is missing and what to run instead.
"""

from __future__ import annotations

import importlib.util


class EngineError(RuntimeError):
    """The configured engine cannot run on this machine; the message says why and what to do."""


def require_engine(engine: str) -> None:
    """Raise EngineError unless `engine` can serve here."""
    if engine == "hf":
        return
    if engine != "vllm":
        raise EngineError(f"serve.engine: unknown engine {engine!r}; use 'hf' or 'vllm'")
    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("the vllm package (pip install '.[gpu]')")
    import torch

    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    if missing:
        raise EngineError(f"serve.engine: 'vllm' needs {' and '.join(missing)}; set serve.engine=hf to serve "
                          "with transformers on this machine")
    raise EngineError("serve.engine: 'vllm' is not wired into this server yet; serve the run's models with "
                      "ray.serve.llm directly (README, 'Serving a run', GPU path) or set serve.engine=hf")
