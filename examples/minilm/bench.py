"""The comparison table: cosine similarity to the dense model and latency of dense,
spc and torch.sparse, per pruning pattern and batch size."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from .sparsify import PATTERNS, sparsify, spc_format, torch_sparse_layout


@dataclass(frozen=True)
class Row:
    pattern: str
    method: str                # how the weights were pruned (sparsify.METHODS)
    batch: int
    spc_fmt: str
    torch_layout: str
    cos_mean: float            # spc's embeddings against the dense model's
    cos_min: float
    spc_vs_masked: float       # max |spc - pruned weights computed densely|
    dense_ms: float            # per batch
    spc_ms: float
    torch_sparse_ms: float


def batches(tokenizer, sentences, batch: int, device) -> list[tuple]:
    """The sentences cut into consecutive batches of ``batch``, each tokenized and
    padded to its longest sentence, on ``device``."""
    return [tuple(t.to(device) for t in tokenizer(list(sentences[i: i + batch])))
            for i in range(0, len(sentences), batch)]


@torch.no_grad()
def embed(model, inputs) -> torch.Tensor:
    """Every batch's embeddings, stacked, as float32."""
    return torch.cat([model(*b) for b in inputs]).float()


def latency_ms(model, inputs, min_time: float) -> float:
    """Median time of one batch (the mean over ``inputs`` of a timed pass over all of
    them), by ``torch.utils.benchmark`` (warm-up, CUDA synchronized), in ms."""
    def run():
        with torch.no_grad():
            for b in inputs:
                model(*b)
    run()                                                    # compiles spc's kernels
    timer = Timer("run()", globals={"run": run}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_time).median * 1e3 / len(inputs)


def compare(dense, tokenizer, sentences, *, patterns, batch_sizes, device,
            min_time: float, spc_fmt: str = "csr", pruned=None, method: str = "magnitude",
            log=print) -> list[Row]:
    """One ``Row`` per pattern and batch size (spc's weights in ``spc_format(pattern,
    spc_fmt)``), the linears pruned as ``pruned[pattern]`` says (``prune_model``'s
    result, by ``method``; default: by magnitude)."""
    rows = []
    for bs in batch_sizes:
        inputs = batches(tokenizer, sentences, bs, device)
        reference = embed(dense, inputs)
        for name in patterns:
            pattern = PATTERNS[name]
            fmt = spc_format(pattern, spc_fmt)
            weights = (pruned or {}).get(name)
            models = {v: sparsify(dense, v, pattern, fmt, weights)
                      for v in ("masked", "spc", "torch.sparse")}
            out = {v: embed(m, inputs) for v, m in models.items()}
            cos = (out["spc"] * reference).sum(-1) / (out["spc"].norm(dim=-1) *
                                                      reference.norm(dim=-1))
            row = Row(name, method if weights is not None else "magnitude", bs, fmt, torch_sparse_layout(models["torch.sparse"]),
                      cos.mean().item(), cos.min().item(),
                      (out["spc"] - out["masked"]).abs().max().item(),
                      latency_ms(dense, inputs, min_time),      # again: the load drifts
                      latency_ms(models["spc"], inputs, min_time),
                      latency_ms(models["torch.sparse"], inputs, min_time))
            log(format_row(row))
            rows.append(row)
    return rows


HEADER = ("| pruning | method | batch | cos mean | cos min | max abs(spc - pruned dense) | dense ms "
          "| spc ms (format) | torch.sparse ms (layout) | spc vs dense | spc vs torch.sparse |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def format_row(r: Row) -> str:
    return (f"| {r.pattern} | {r.method} | {r.batch} | {r.cos_mean:.4f} | {r.cos_min:.4f} "
            f"| {r.spc_vs_masked:.1e} | {r.dense_ms:.2f} | {r.spc_ms:.2f} ({r.spc_fmt}) "
            f"| {r.torch_sparse_ms:.2f} ({r.torch_layout}) | {r.dense_ms / r.spc_ms:.2f}x "
            f"| {r.torch_sparse_ms / r.spc_ms:.2f}x |")


def machine(device: str) -> str:
    """The device in words: the GPU's name, or the CPU's model and thread count."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    import spc
    return (f"{name}, {os.cpu_count()} cores, threads: torch {torch.get_num_threads()}, "
            f"spc {spc.get_num_threads()}")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(rows: list[Row], *, device: str, dtype, seq_lens: dict, command: str,
           calibration: str = "") -> str:
    """The table as markdown, with the device, date, commit and command (and
    ``calibration``, a sentence on the calibrated pruning's cost, if given)."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lens = "; ".join(f"batch {b}: {s}" for b, s in seq_lens.items())
    methods = "/".join(sorted({r.method for r in rows}))
    return "\n".join([
        f"all-MiniLM-L6-v2, every encoder linear pruned ({methods}); {device}: "
        f"{machine(device)}; {dtype}; torch {torch.__version__}; spc commit {commit()}; "
        f"{when}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; load "
        f"average at the end {os.getloadavg()[0]:.1f}.",
        f"Tokens per padded sentence ({lens}); latency per batch, median "
        f"(torch.utils.benchmark), dense timed again beside each row; cosine over the "
        f"sentences' embeddings against the dense model's." +
        (f" {calibration}" if calibration else ""),
        f"`{command}`", "", HEADER, *map(format_row, rows), ""])
