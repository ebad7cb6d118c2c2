"""Where a run's artifacts live: a local folder or any filesystem pyarrow.fs knows, one API for both.

`location(ref)` turns `output_dir` (or an input path) into a path object: a plain `pathlib.Path`
for a local folder (`file://` URIs included; a relative path is taken from the directory the job
runs in), or a `RemotePath` for a URI such as `s3://bucket/runs` or `gs://bucket/runs`. A
`RemotePath` offers the part of pathlib the stages use (`/`, `name`, `parent`, `is_file`,
`is_dir`, `iterdir`, `glob`, `read_text`, `read_bytes`, `unlink`...), so stage code reads the
same on both. S3 settings come from the usual AWS environment (credentials, `AWS_REGION`,
`AWS_ENDPOINT_URL` for an S3-compatible server).

Publishing (see `pipeline.records.atomic_path` / `atomic_dir`) is durable and all-or-nothing:
- local: the file is written beside its target, flushed and fsync'ed, renamed over the target,
  and the folder fsync'ed; a folder replaces the old one by two renames (old aside, new in, then
  the old is deleted), so a reader sees the old or the new folder, never neither;
- object stores: a file is one PUT of its complete bytes (a killed upload leaves no object); a
  folder's files are uploaded first and its `CONTENTS.json` (every file's size and sha256) last,
  so a folder without it, or whose files do not match it, is incomplete.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Iterator

import pyarrow.fs as pafs

CONTENTS = "CONTENTS.json"  # a published folder's file list (size, sha256); written last
CHUNK = 8 << 20


class StorageError(OSError):
    """A storage location that cannot be used; names the URI."""


class RemotePath:
    """A path on a pyarrow filesystem (object store, HDFS, ...), with pathlib's common methods."""

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str):
        self.fs, self.path, self.scheme = fs, path.rstrip("/"), scheme

    # --- naming
    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, part) -> "RemotePath":
        return RemotePath(self.fs, f"{self.path}/{str(part).strip('/')}", self.scheme)

    def joinpath(self, *parts) -> "RemotePath":
        out = self
        for p in parts:
            out = out / p
        return out

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.path).stem

    @property
    def parent(self) -> "RemotePath":
        return RemotePath(self.fs, str(PurePosixPath(self.path).parent), self.scheme)

    def relative_to(self, other: "RemotePath") -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(other.path)

    def resolve(self) -> "RemotePath":
        return self

    def expanduser(self) -> "RemotePath":
        return self

    def as_posix(self) -> str:
        return str(self)

    # --- queries
    def _type(self):
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def size(self) -> int:
        return self.fs.get_file_info(self.path).size

    def stat(self) -> SimpleNamespace:
        """st_size and st_mtime (0 where the store keeps none, e.g. an object-store folder)."""
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{self}: no such file or folder")
        return SimpleNamespace(st_size=info.size or 0, st_mtime=info.mtime.timestamp() if info.mtime else 0.0)

    def iterdir(self) -> Iterator["RemotePath"]:
        for info in self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True)):
            yield RemotePath(self.fs, info.path, self.scheme)

    def glob(self, pattern: str) -> Iterator["RemotePath"]:
        return (p for p in self.iterdir() if fnmatch.fnmatch(p.name, pattern))

    def rglob(self, pattern: str) -> Iterator["RemotePath"]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        return (RemotePath(self.fs, i.path, self.scheme) for i in infos if fnmatch.fnmatch(PurePosixPath(i.path).name, pattern))

    # --- reading and writing (a write is one complete PUT)
    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self}: no such file") from None

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders to make; other filesystems get one."""
        self.fs.create_dir(self.path, recursive=True)

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.is_file():
            return
        self.fs.delete_file(self.path)


AnyPath = Path | RemotePath


def location(ref: str | Path, base: Path | None = None) -> AnyPath:
    """A local Path (relative paths taken from `base`, default the working directory) or a
    RemotePath for a URI any pyarrow filesystem knows."""
    text = str(ref)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" not in text:
        path = Path(text).expanduser()
        return path if path.is_absolute() else (base or Path.cwd()) / path
    scheme = text.split("://", 1)[0]
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise StorageError(f"{text}: not a storage location pyarrow can open ({err})") from None
    if not path.strip("/"):
        raise StorageError(f"{text}: names no bucket or folder; give one, e.g. {scheme}://BUCKET/runs")
    return RemotePath(fs, path, scheme)


def is_remote(path) -> bool:
    return isinstance(path, RemotePath)


def filesystem(path: AnyPath) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path on it) of a location, e.g. for Ray Train's storage."""
    if isinstance(path, RemotePath):
        return path.fs, path.path
    return pafs.LocalFileSystem(), str(Path(path).absolute())


def file_size(path: AnyPath) -> int | None:
    if isinstance(path, RemotePath):
        info = path.fs.get_file_info(path.path)
        return info.size if info.type == pafs.FileType.File else None
    return path.stat().st_size if path.is_file() else None


def list_files(folder: AnyPath) -> dict[str, int]:
    """Every file under `folder` (relative posix path -> size); {} if it does not exist."""
    fs, root = filesystem(folder)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {PurePosixPath(i.path).relative_to(root).as_posix(): i.size for i in infos if i.type == pafs.FileType.File}


def sha256(path: AnyPath) -> str:
    digest = hashlib.sha256()
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remove(path: AnyPath) -> None:
    """Delete a file or a folder (recursively); nothing if it does not exist."""
    fs, p = filesystem(path)
    kind = fs.get_file_info(p).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif kind == pafs.FileType.File:
        fs.delete_file(p)


# ---------------------------------------------------------------- publishing (all or nothing)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_file(tmp: Path, target: AnyPath) -> None:
    """Move a finished local temporary file onto `target`, durably and atomically."""
    if isinstance(target, RemotePath):
        target.write_bytes(tmp.read_bytes())  # one PUT of the complete bytes
        tmp.unlink()
        return
    fsync_path(tmp)
    os.replace(tmp, target)
    fsync_path(target.parent)


def folder_contents(folder: Path) -> dict[str, dict]:
    """{relative path: {size, sha256}} of every file in a local folder, CONTENTS.json aside."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != CONTENTS:
            out[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size, "sha256": sha256(p)}
    return out


def contents_digest(contents: dict) -> str:
    return hashlib.sha256(json.dumps(contents, sort_keys=True).encode()).hexdigest()


def publish_dir(tmp: Path, target: AnyPath) -> None:
    """Replace `target` by the finished local folder `tmp` (which then no longer exists).

    Writes CONTENTS.json into it first. Local: fsync every file, then old aside, new in, old
    deleted. Remote: old CONTENTS.json removed, files uploaded, CONTENTS.json uploaded last, stale
    files removed."""
    contents = folder_contents(tmp)
    (tmp / CONTENTS).write_text(json.dumps(contents, indent=1, sort_keys=True) + "\n")
    if isinstance(target, RemotePath):
        (target / CONTENTS).unlink(missing_ok=True)
        old = set(list_files(target))
        for rel in contents:
            with open(tmp / rel, "rb") as src, target.fs.open_output_stream(f"{target.path}/{rel}") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
        (target / CONTENTS).write_bytes((tmp / CONTENTS).read_bytes())
        for rel in old - set(contents) - {CONTENTS}:
            (target / rel).unlink(missing_ok=True)
        shutil.rmtree(tmp)
        return
    for p in tmp.rglob("*"):
        if p.is_file():
            fsync_path(p)
    fsync_path(tmp)
    aside = target.parent / f".{target.name}.old"
    if aside.exists():
        shutil.rmtree(aside)
    if target.exists():
        os.replace(target, aside)
    os.replace(tmp, target)
    fsync_path(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def read_contents(folder: AnyPath) -> dict | None:
    """A published folder's CONTENTS.json, or None if the folder is incomplete or absent."""
    marker = folder / CONTENTS
    if not marker.is_file():
        return None
    return json.loads(marker.read_text())


def verify_folder(folder: AnyPath, contents: dict, hashes: bool = False) -> list[str]:
    """Files of `contents` missing from `folder` or of another size (or hash): [] when complete."""
    present = list_files(folder)
    bad = [rel for rel, meta in contents.items() if present.get(rel) != meta["size"]]
    if hashes and not bad:
        bad = [rel for rel, meta in contents.items() if sha256(folder / rel) != meta["sha256"]]
    return bad


def download_dir(folder: AnyPath, contents: dict, dst: Path) -> None:
    """Copy the files `contents` lists from `folder` into the local folder `dst`, checking each
    file's sha256 as it arrives."""
    fs, root = filesystem(folder)
    for rel, meta in contents.items():
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with fs.open_input_stream(f"{root}/{rel}") as src, open(out, "wb") as f:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                f.write(chunk)
        if "sha256" in meta and digest.hexdigest() != meta["sha256"]:
            raise StorageError(f"{folder}/{rel}: content differs from its CONTENTS.json entry (changed while copying?)")
    (dst / CONTENTS).write_text(json.dumps(contents, indent=1, sort_keys=True) + "\n")
