"""The real-matrix corpus (DLMC pruned weights and graphs) under ``spc.config.data_dir()``.

    from spc import corpus
    if corpus.available():
        for e in corpus.entries(family="graph", max_nnz=300_000):
            A = corpus.load(e.path)          # scipy.sparse.csr_matrix, float32

The files store sparsity patterns only; :func:`load` fills the values with a
fixed-seed uniform(-1, 1) draw, so every load of a file gives the same matrix.
"""
from __future__ import annotations

import csv
import gzip
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config

MANIFEST = "MANIFEST.tsv"


@dataclass(frozen=True)
class Entry:
    """One corpus file as listed in the manifest (``path`` is absolute)."""
    path: Path
    family: str          # 'dlmc-transformer', 'dlmc-rn50' or 'graph'
    rows: int
    cols: int
    nnz: int

    @property
    def name(self) -> str:
        """The path relative to the corpus directory (a readable test id)."""
        try:
            return self.path.relative_to(corpus_dir()).as_posix()
        except ValueError:
            return self.path.name


def corpus_dir() -> Path:
    """Where the corpus lives (``SPC_DATA_DIR``, else ../shared/data beside the repo)."""
    return config.data_dir()


def available() -> bool:
    """True when the corpus directory and its manifest exist."""
    return (corpus_dir() / MANIFEST).is_file()


def entries(family: str | None = None, max_nnz: int | None = None) -> list[Entry]:
    """The manifest's files, optionally only one ``family`` and at most ``max_nnz``
    nonzeros, in manifest order.
    """
    root = corpus_dir()
    with open(root / MANIFEST, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = []
    for row in rows:
        e = Entry(root / row["path"], row["family"], int(row["rows"]), int(row["cols"]),
                  int(row["nnz"]))
        if family is not None and e.family != family:
            continue
        if max_nnz is not None and e.nnz > max_nnz:
            continue
        out.append(e)
    return out


def load(path, dtype=np.float32):
    """The matrix in ``path`` (.smtx, .mtx, optionally .gz) as a canonical
    scipy.sparse.csr_matrix (sorted indices, no duplicates) with values drawn
    from uniform(-1, 1) by a generator seeded from the file's name.
    """
    import scipy.sparse as sp
    path = Path(path)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith(".smtx"):
        shape, indptr, indices = _read_smtx(path)
        m = sp.csr_matrix((np.ones(len(indices), dtype=dtype), indices, indptr), shape=shape)
    elif name.endswith(".mtx"):
        m = _read_mtx(path).tocsr()
    else:
        raise ValueError(f"{path}: not a .smtx or .mtx file")
    m.sum_duplicates()          # also sorts indices
    m.data = _values(path, m.nnz, dtype)
    return m


def seed_of(path) -> int:
    """The value seed of a corpus file: a CRC of its path relative to the corpus
    directory (its name alone when outside it) less any ``.gz``, so it is the same
    in every process and for a compressed or plain copy.
    """
    path = Path(path)
    try:
        key = path.resolve().relative_to(corpus_dir().resolve()).as_posix()
    except (ValueError, OSError):
        key = path.name
    return zlib.crc32(key.removesuffix(".gz").encode())


def _values(path, n: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(seed_of(path))
    return rng.uniform(-1.0, 1.0, n).astype(dtype)


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="ascii")
    return open(path, encoding="ascii")


def _read_smtx(path: Path):
    """(shape, indptr, indices) of a DLMC .smtx file (3 lines: header, offsets, columns)."""
    with _open_text(path) as f:
        header = f.readline()
        offsets = f.readline()
        columns = f.readline()
    try:
        rows, cols, nnz = (int(s) for s in header.split(","))
    except ValueError:
        raise ValueError(f"{path}: bad .smtx header {header.strip()!r}") from None
    indptr = np.array(offsets.split(), dtype=np.int64)
    indices = np.array(columns.split(), dtype=np.int64)
    if len(indptr) != rows + 1 or indptr[0] != 0 or indptr[-1] != nnz or len(indices) != nnz:
        raise ValueError(f"{path}: .smtx offsets/columns do not match the header "
                         f"{rows}, {cols}, {nnz}")
    if nnz and (indices.min() < 0 or indices.max() >= cols or np.any(np.diff(indptr) < 0)):
        raise ValueError(f"{path}: .smtx column index out of range or offsets decreasing")
    return (rows, cols), indptr, indices


def _read_mtx(path: Path):
    """A Matrix Market coordinate file as scipy COO; ``symmetric`` expands both
    triangles (the diagonal once), as scipy.io.mmread does."""
    import scipy.io
    import scipy.sparse as sp
    m = scipy.io.mmread(str(path))
    if not sp.issparse(m):
        raise ValueError(f"{path}: a Matrix Market array file, not coordinate")
    return sp.coo_matrix(m)
