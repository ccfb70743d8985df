"""Safe file handling: atomic safetensors writes and checked reads (never pickle)."""
from __future__ import annotations

import json
import mmap
import os
import tempfile
import warnings
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import save_file

from .model.config import CheckpointError


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) on a temporary file beside path, fsync it and rename it over path. On any failure
    (disk full, permission, interruption) the previous file at path is untouched and the temporary removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is 0600 and writers may re-create it: readable as any new file
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


MAX_TEXT_BYTES = 1 << 20


def read_small_text(path: str | os.PathLike, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """A JSON/TOML/YAML file a user hands over (config, prompts, sample.json), refused above `limit` bytes before
    a byte of it is parsed: such files hold a few settings, a huge one is the wrong file or hostile."""
    path = Path(path)
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{what} {path} is {size / 2**20:.1f} MB, more than the {limit // 1024} KB such a file "
                         f"needs; check that it is the right file")
    return path.read_text(encoding="utf-8")


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what atomic_write calls cut short by a kill left in folder (never read: they are not the file's
    name). Call it only where no other process is writing into folder."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_safetensors(tensors: Mapping[str, torch.Tensor], path, metadata: Mapping[str, str] | None = None) -> Path:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=dict(metadata or {})))


PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ / torch zip archive
MAX_HEADER = 100 * 1024 * 1024
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
          "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


class SafetensorsFile:
    """A safetensors file read through a private memory map: tensor(name) returns a tensor backed by the file's
    pages (copy-on-write), so loading costs no second copy in RAM and untouched weights are never read.
    The header is validated up front, with a clear error for missing, truncated, pickle or foreign files."""

    def __init__(self, path: str | os.PathLike):
        self.path = path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file; check the path or the models folder it should be in")
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            plausible = 2 <= n <= min(MAX_HEADER, size - 8)
            if not plausible or f.read(1) != b"{":
                # Not a safetensors header; say what it is when we can tell.
                if head[:1] == PICKLE_MAGIC[0] and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") \
                        or head[:4] == PICKLE_MAGIC[1]:
                    raise CheckpointError(f"{path}: this is a pickle/PyTorch archive, not safetensors. Pickle files "
                                          f"can run code and are never loaded; convert it to .safetensors first")
                raise self._corrupt("bad header")
            try:
                header = json.loads(b"{" + f.read(n - 1))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise self._corrupt("header is not JSON") from None
        if not isinstance(header, dict):
            raise self._corrupt("header is not a JSON object")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        self._entries = {}
        for name, info in header.items():
            try:
                dtype = DTYPES[info["dtype"]]
                shape = [int(d) for d in info["shape"]]
                begin, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise self._corrupt(f"entry {name!r} is malformed") from None
            numel = 1
            for d in shape:
                numel *= d
            if end - begin != numel * dtype.itemsize or begin < 0 or self._data_start + end > size:
                raise self._corrupt(f"tensor {name!r} runs past the end of the file (truncated?)")
            self._entries[name] = (dtype, shape, begin, end)
        self._map = None
        if size > self._data_start:
            with open(path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)

    def _corrupt(self, why: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: not a valid safetensors file ({why}); it may be truncated or "
                               f"corrupt: download or save it again")

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> list[int]:
        return list(self._entries[name][1])

    def tensor(self, name: str) -> torch.Tensor:
        dtype, shape, begin, end = self._entries[name]
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        offset = self._data_start + begin
        if offset % dtype.itemsize:  # misaligned: copy instead of viewing
            return torch.frombuffer(bytearray(self._map[offset:offset + end - begin]), dtype=dtype).reshape(shape)
        with warnings.catch_warnings():  # the map is copy-on-write, so writes never reach the file
            warnings.simplefilter("ignore", UserWarning)
            return torch.frombuffer(self._map, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                    offset=offset).reshape(shape)


def read_metadata_json(metadata: Mapping[str, str] | None, key: str):
    if not metadata or key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"the file's '{key}' header is not valid JSON ({err})") from None


def check_writable(path: str | Path, option: str, folder: bool = False) -> Path:
    """One line naming `option` when `path` (a file to write, or with folder=True a folder to create or fill) cannot
    be written, checked before any work. Leaves nothing behind: folders are made only when the output is written."""
    path = Path(path)
    if not folder and path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name inside it")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file; give a folder")
    existing = path if folder else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder; give a path in a folder you can "
                           f"write to")
    try:
        fd, probe = tempfile.mkstemp(prefix=".alchemint-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot write into {existing} ({err.strerror or err}); give a path in a "
                           f"folder you can write to") from None
    return path
