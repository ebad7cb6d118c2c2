"""A stage's fingerprint: everything its outputs depend on, recorded in its manifest.

Each stage module declares what it reads:
- `CONFIG_KEYS`: dotted config prefixes (e.g. `"data"`, `"model.ref"`), minus `IGNORED_KEYS`;
  `derived_config(cfg)` may add values computed from the config (e.g. the strategies the
  conditions need), so an unrelated change (adding `icl`) does not make it stale;
- `UPSTREAM`: the earlier stages whose files it reads; their manifests' sha256 go in (a stage
  that reran, even with --force and identical outputs, makes every later stage stale);
- `input_files(cfg)`: files or folders outside the run it reads (the corpus, the celebrities
  folder, extra checkpoints), by size and sha256;
- `model_refs(cfg)`: the models whose weights it uses, by identity (`model_identity`).

The code version (package version, git commit) is recorded in every manifest and shown by
`status`, but is not part of the fingerprint: a code change alone does not rerun anything
(re-run with --force when a change should alter outputs).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline import storage
from pipeline.config import RunConfig, config_to_dict, flatten
from pipeline.section import ModelConfig

SMALL_FILE = 32 << 20  # files up to this size are hashed when a manifest is checked


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_view(module: ModuleType, cfg: RunConfig) -> dict[str, Any]:
    """The config values a stage reads: {dotted key: value}."""
    flat = flatten(config_to_dict(cfg))
    keys, ignored = getattr(module, "CONFIG_KEYS", ()), getattr(module, "IGNORED_KEYS", ())
    view = {k: v for k, v in sorted(flat.items()) if _under(k, keys) and not _under(k, ignored)}
    derive = getattr(module, "derived_config", None)
    if derive is not None:
        view.update({f"({k})": v for k, v in derive(cfg).items()})
    return view


def digest_of(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def path_digest(ref: str) -> str:
    """sha256 over a file's bytes, or over a folder's files (names and contents); 'missing' if absent."""
    where = storage.location(ref)
    if where.is_file():
        return storage.sha256(where)
    files = storage.list_files(where)
    if not files:
        return "missing"
    return digest_of({rel: storage.sha256(where / rel) for rel in sorted(files)})


@lru_cache(maxsize=None)
def _folder_weights_digest(folder: str, stamp: str) -> str:
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and (p.suffix in (".safetensors", ".json", ".model")))
    return digest_of({p.name: storage.sha256(p) for p in files})


def model_identity(model: ModelConfig) -> str:
    """The weights a model reference points at: sha256 of a local folder's weights and config
    files, or a hub id with the revision found in the local cache."""
    from pipeline import models

    if "://" in model.ref:  # a folder in storage: its CONTENTS.json, else its file listing
        where = storage.location(model.ref)
        contents = storage.read_contents(where)
        return "contents:" + (storage.contents_digest(contents) if contents else digest_of(storage.list_files(where)))
    src = models.resolve(model)
    if isinstance(src, Path):
        stamp = json.dumps(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in src.iterdir() if p.is_file()))
        return "sha256:" + _folder_weights_digest(str(src), stamp)
    try:
        return f"hub:{src}@{models.local_model_folder(model).name}"  # snapshots/<revision>
    except models.ModelError:
        return f"hub:{src}"


def expected(module: ModuleType, cfg: RunConfig, upstream_digests: dict[str, str | None]) -> dict:
    """The fingerprint a stage would record if it ran now with this config."""
    inputs = {ref: path_digest(ref) for ref in (module.input_files(cfg) if hasattr(module, "input_files") else [])}
    refs = module.model_refs(cfg) if hasattr(module, "model_refs") else {}
    return {
        "config": config_view(module, cfg),
        "inputs": inputs,
        "upstream": dict(upstream_digests),
        "models": {key: model_identity(m) for key, m in refs.items()},
    }


def differences(recorded: dict, now: dict) -> list[str]:
    """Why a recorded fingerprint does not match the current one, one reason per line."""
    reasons = []
    old_cfg, new_cfg = recorded.get("config", {}), now["config"]
    changed = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k, "<unset>") != new_cfg.get(k, "<unset>"))
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        reasons.append(f"config changed: {shown}")
    for kind, label in (("inputs", "input"), ("models", "model")):
        old, new = recorded.get(kind, {}), now[kind]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                reasons.append(f"{label} {key} changed")
    old_up = recorded.get("upstream", {})
    for stage, digest in now["upstream"].items():
        if old_up.get(stage) != digest:
            reasons.append(f"upstream {stage} reran since" if digest else f"upstream {stage} has no manifest")
    return reasons


def output_records(run_dir, rels: list[str]) -> dict[str, dict]:
    """{relative path: {size, sha256 (files up to SMALL_FILE)}} of every file under the given
    run-relative files or folders."""
    out = {}
    for rel in rels:
        where = run_dir / rel
        files = {rel: storage.file_size(where)} if where.is_file() else {f"{rel}/{k}": v for k, v in storage.list_files(where).items()}
        for name, size in sorted(files.items()):
            if size is None:
                continue
            out[name] = {"size": size, **({"sha256": storage.sha256(run_dir / name)} if size <= SMALL_FILE else {})}
    return out


def check_outputs(run_dir, records: dict[str, dict]) -> list[str]:
    """Recorded outputs that are missing or changed since (size, and sha256 where recorded)."""
    problems = []
    for name, meta in records.items():
        size = storage.file_size(run_dir / name)
        if size is None:
            problems.append(f"output {name} is missing")
        elif size != meta["size"] or ("sha256" in meta and storage.sha256(run_dir / name) != meta["sha256"]):
            problems.append(f"output {name} changed since the stage finished")
    return problems


@lru_cache(maxsize=1)
def code_version() -> dict:
    """The package version and, in a git checkout, the commit (with '+dirty' for local edits)."""
    try:
        version = importlib.metadata.version("knowledge-lab")
    except importlib.metadata.PackageNotFoundError:
        version = None
    root = Path(__file__).resolve().parents[1]
    commit = None
    if (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10).stdout.strip() or None
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            commit = f"{commit}+dirty" if commit and dirty else commit
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"version": version, "git": commit}
