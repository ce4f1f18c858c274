"""Random fuzz cases: deterministic from (seed, number), plain JSON.

A case holds the program (tree, output, indices), a format per tensor, a
schedule, index extents, a dtype, and per input the dense values (already
rounded to the dtype) with the operand family that hands them to spc (scipy
canonical/unsorted/duplicates/explicit zeros, numpy C/F/strided/transposed,
torch dense/COO/CSR, spc tensors...).  Families derive their storage from the
dense values and a per-operand seed, so a case is its own reproducer.
"""
from __future__ import annotations

import itertools
import random

import numpy as np

from . import expr as E

# --------------------------------------------------------------------- names

PLAIN_TENSORS = list("ABCDEFGHMNPQRSTWXYZ") + ["x", "y", "w", "b", "v", "u"]
PLAIN_INDICES = ["i", "j", "k", "l", "m", "n", "p", "q"]
# C/CUDA keywords and types, macros and builtins, and names spc generates
# (or did): each may collide with something in the generated code.
KEYWORDS = ["int", "for", "float", "auto", "double", "if", "else", "while", "return", "const",
            "void", "char", "long", "short", "signed", "unsigned", "struct", "union", "enum",
            "static", "extern", "register", "volatile", "restrict", "inline", "goto", "break",
            "continue", "switch", "case", "default", "do", "sizeof", "typedef", "bool", "true",
            "false", "class", "new", "delete", "this", "template", "namespace", "operator",
            "private", "public", "virtual", "friend", "mutable", "explicit", "constexpr",
            "nullptr", "asm", "typename", "using", "half", "size_t", "main", "self", "None",
            "lambda", "def", "import", "global", "nonlocal", "validate", "args", "kwargs",
            "ptr", "i32", "i64", "f32", "f64", "label", "entry", "ret", "phi", "define",
            "declare", "alloca", "store", "load", "br", "x1"]
MACROS = ["NAN", "INFINITY", "NULL", "warpSize", "SPC_FULL_MASK", "threadIdx", "blockIdx",
          "blockDim", "gridDim", "__shfl_down_sync", "__syncthreads", "EOF", "errno", "assert",
          "min", "max", "abs", "fabs", "sqrt", "atomicAdd", "printf", "malloc", "stdout",
          "M_PI", "FLT_MAX", "INT_MAX", "__global__", "__device__", "_", "__", "_x", "x_",
          "SPC_INLINE", "spc_warp_sum", "float4", "double2", "int2", "dim3", "cudaStream_t"]
SPC_LIKE = ["size_j", "size_i", "size_k", "acc", "acc0", "A1_p2", "A0_p0", "A1_pos", "A1_crd",
            "i_blk", "i_in", "j_in", "j_blk", "A_vals", "B_vals", "out_p", "out", "tid", "lane",
            "warp", "nthreads", "chunk", "p", "pA", "pB", "q0", "i0", "j1", "k2", "row", "col",
            "val", "vals", "pos", "crd", "ptr_i", "n", "N", "M", "K", "T", "len", "start",
            "end", "lo", "hi", "sum", "tmp", "t0", "y_out", "result", "counts", "workspace",
            "C_pos", "C_crd", "C_vals", "kernel", "args0", "bound", "sizes", "i_1", "Z0"]
WEIRD = ["a" * 40, "X9", "_A", "A_", "Ab_cD", "camelCase", "UPPER", "q_q_q"]


def pick_name(rng: random.Random, used: set, plain: list, weird_rate: float) -> str:
    for _ in range(50):
        if rng.random() < weird_rate:
            pool = rng.choice([KEYWORDS, MACROS, SPC_LIKE, WEIRD])
        else:
            pool = plain
        name = rng.choice(pool)
        if name not in used:
            return name
    n = 0
    while f"t{n}" in used:
        n += 1
    return f"t{n}"


# ------------------------------------------------------------------- formats

def formats_for(rank: int, rng: random.Random, *, nm_ok: bool = True, user: bool = True) -> str:
    if rank == 0:
        return "dense"
    if rank == 1:
        return rng.choice(["dense", "dense", "s", "d", "coo", "sparse", "csf"])
    if rank == 2:
        choices = ["dense", "dense", "csr", "csr", "csc", "coo", "dcsr", "dcsc", "csf", "sparse",
                   "ds", "sd", "ss", "dd", "ell", "dia", "hyb"]
        choices += [f"bsr({rng.choice([1, 2, 3, 4])},{rng.choice([1, 2, 3, 4])})",
                    f"ell({rng.choice([1, 2, 3, 8])})", f"hyb({rng.choice([1, 2])})"]
        if nm_ok:
            choices += [rng.choice(["nm(2,4)", "nm(1,2)", "nm(1,4)", "nm(3,4)", "nm(2,2)", "nm(4,8)"])]
        if user:
            choices += ["sell"]
        return rng.choice(choices)
    return rng.choice(["dense", "dense", "csf", "sparse", "coo"] +
                      ["".join(p) for p in itertools.product("ds", repeat=3)])


def is_dense_format(fmt: str) -> bool:
    return fmt == "dense" or set(fmt) == {"d"}


def nm_params(fmt: str):
    if fmt.startswith("nm("):
        n, m = fmt[3:-1].split(",")
        return int(n), int(m)
    return None


# ------------------------------------------------------------------ families

FAMILIES = {
    0: ["float", "np-scalar", "np-0d", "torch", "spc"],
    1: ["numpy", "numpy", "numpy-strided", "torch", "torch-coo", "spc"],
    2: ["numpy", "numpy", "numpy-f", "numpy-strided", "numpy-T", "scipy-csr", "scipy-csr",
        "scipy-csc", "scipy-coo", "scipy-csr-unsorted", "scipy-csr-dup", "scipy-coo-dup",
        "scipy-csr-zeros", "scipy-csr-unsorted-dup-zeros", "scipy-csc-unsorted", "scipy-bsr",
        "torch", "torch-coo", "torch-coo-dup", "torch-csr", "torch-csc", "spc", "spc",
        "spc-from-scipy"],
    3: ["numpy", "numpy-strided", "numpy-T", "torch", "torch-coo", "spc"],
}


# ---------------------------------------------------------------- programs

CONSTS = ["2", "3", "0.5", "1.5", "0.25", "1", "0", "1.", ".5", "2e0", "0.125", "4"]


def gen_tree(rng: random.Random, tensors: dict, indices: list, names: set, budget: list,
             weird: float, depth: int = 0):
    terms = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        factors = []
        for _ in range(rng.choice([1, 1, 2, 2, 3])):
            kind = rng.choice(["acc", "acc", "acc", "acc", "const", "paren"])
            if budget[0] <= 0 or (kind == "paren" and depth > 1):
                kind = "const"
            if kind == "acc":
                budget[0] -= 1
                if tensors and rng.random() < 0.2:          # the same tensor again
                    name = rng.choice(sorted(tensors))
                    idx = tensors[name]
                    if len(idx) >= 2 and rng.random() < 0.3:  # ... with its indices permuted
                        idx = rng.sample(idx, len(idx))
                    f = ["acc", name, list(idx)]
                else:
                    name = pick_name(rng, names, PLAIN_TENSORS, weird)
                    names.add(name)
                    rank = rng.choice([0, 1, 1, 2, 2, 2, 2, 3])
                    idx = rng.sample(indices, min(rank, len(indices)))
                    if len(idx) == 2 and rng.random() < 0.03:
                        idx = [idx[0], idx[0]]               # a diagonal access
                    tensors[name] = idx
                    f = ["acc", name, list(idx)]
            elif kind == "const":
                f = ["const", rng.choice(CONSTS)]
            else:
                inner = gen_tree(rng, tensors, indices, names, budget, weird, depth + 1)
                f = ["sum", inner[1], True]
            if rng.random() < 0.12:
                f = ["neg", f]
            factors.append(f)
        t = factors[0] if len(factors) == 1 else ["mul", factors]
        terms.append([rng.choice([1, 1, -1]), t])
    return ["sum", terms, False]


def _unify(tree, tensors) -> dict:
    """Indices that share an axis of one tensor (A[i,j] and A[j,i]) need equal
    extents: a map index -> representative."""
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for a in E.accesses(tree):
        for ax, ix in enumerate(a[2]):
            find(ix)
            ix0 = tensors[a[1]][ax]
            ra, rb = find(ix), find(ix0)
            if ra != rb:
                parent[ra] = rb
        # a diagonal access A[i,i] of a tensor declared A[i,j] ties i and j too
    return {x: find(x) for x in parent}


PATTERNS = ["random", "random", "random", "zero", "empty-rows", "one-dense-row", "full",
            "single"]


def gen_values(rng: np.random.Generator, shape, pattern: str, dtype: str) -> np.ndarray:
    if pattern == "full":
        mask = np.ones(shape, dtype=bool)
    elif pattern == "zero":
        mask = np.zeros(shape, dtype=bool)
    elif pattern == "single":
        mask = np.zeros(shape, dtype=bool)
        if mask.size:
            mask.flat[rng.integers(mask.size)] = True
    else:
        mask = rng.random(shape) < rng.choice([0.15, 0.35, 0.7])
        if len(shape) >= 1 and shape[0] > 0 and pattern == "empty-rows":
            mask[rng.random(shape[0]) < 0.5] = False
        if len(shape) >= 1 and shape[0] > 0 and pattern == "one-dense-row":
            mask[:] = False
            mask[rng.integers(shape[0])] = True
    vals = rng.uniform(-1, 1, shape)
    vals = np.where(np.abs(vals) < 0.05, 0.5, vals)       # no accidental near-zeros
    return np.asarray(np.where(mask, vals, 0.0), dtype=dtype).astype(np.float64)


def apply_nm(arr: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep at most n nonzeros per group of m columns in each row."""
    out = arr.copy()
    rows, cols = out.shape
    for r in range(rows):
        for g in range(0, cols, m):
            nz = [c for c in range(g, min(g + m, cols)) if out[r, c] != 0]
            for c in nz[n:]:
                out[r, c] = 0.0
    return out


VARIANTS = 4   # consecutive case numbers share a program (compiled once per worker)


EPILOGUE_RATE = 0.2
PATTERN_RATE = 0.15      # cases that read an operand's pattern (gen_pattern.py)


def gen_case(seed: int, number: int, *, target: str = "cpu", weird: float = 0.15,
             sizes=(0, 1, 1, 2, 3, 4, 5, 7), variants: int = VARIANTS,
             pattern_rate: float = PATTERN_RATE) -> dict:
    """Case ``number`` of ``seed``: the program, formats, schedule and dtype come
    from ``number // variants``, the extents, data, families and call style from
    ``number`` itself.  A share PATTERN_RATE of programs read an operand's pattern
    (``stored``, ``max``/``min``/``sum(j, e)``, programs of several statements:
    ``gen_pattern.py``); its own stream, so the other cases of older seeds stay."""
    if random.Random(f"{seed}:{number // variants}:pattern").random() < pattern_rate:
        from .gen_pattern import gen_pattern_case
        return gen_pattern_case(seed, number, target=target, weird=weird, sizes=sizes,
                                variants=variants)
    rng = random.Random(f"{seed}:{number // variants}")
    drng = random.Random(f"{seed}:{number}:data")
    nrng = np.random.default_rng([seed, number])
    names: set = set()
    n_idx = rng.choice([1, 2, 2, 3, 3, 3, 4])
    indices = []
    for _ in range(n_idx):
        ix = pick_name(rng, names, PLAIN_INDICES, weird)
        names.add(ix)
        indices.append(ix)
    tensors: dict = {}
    tree = gen_tree(rng, tensors, indices, names, [rng.choice([1, 2, 3, 4])], weird)
    used = list(dict.fromkeys(ix for a in E.accesses(tree) for ix in a[2]))
    out = pick_name(rng, names, ["Z", "y", "C", "out", "S", "s", "R"], weird)
    names.add(out)
    out_idx = rng.sample(used, rng.randint(0, min(3, len(used)))) if used else []
    dtype = rng.choice(["float64", "float32"])
    formats = {}
    for name, idx in tensors.items():
        fmt = formats_for(len(idx), rng)
        if len(set(idx)) < len(idx):
            fmt = rng.choice(["dense", fmt])
        if fmt != "dense":
            formats[name] = fmt
    if out_idx and rng.random() < 0.25:
        formats[out] = formats_for(len(out_idx), rng, nm_ok=False, user=False)
        if formats[out] == "dense":
            del formats[out]
    schedule = None
    if rng.random() < 0.4:
        all_idx = list(dict.fromkeys(list(out_idx) + used))
        order = rng.sample(all_idx, len(all_idx)) if rng.random() < 0.6 else None
        schedule = {"order": order, "parallel": rng.choice([True, False]),
                    "threads": rng.choice([None, 1, 2, 3, 8])}
    srng = random.Random(f"{seed}:{number // variants}:space")   # (older seeds' cases unchanged)
    if schedule is None and srng.random() < 0.2:
        # one schedule of spc.schedule_space, loop orders over the derived indices
        # (a blocked format's i_blk, i_in) and launch knobs included
        schedule = {"pick": srng.random()}
    # the data side
    rep = _unify(tree, tensors)
    base = {}
    big = drng.random() < 0.08                 # now and then one index of 16..130
    for ix in used:
        if big and rep.get(ix, ix) not in base:
            base[rep.get(ix, ix)] = drng.choice([16, 33, 64, 130])
            big = False
        base.setdefault(rep.get(ix, ix), drng.choice(sizes))
    extents = {ix: base[rep.get(ix, ix)] for ix in used}
    operands = {}
    for name, idx in tensors.items():
        rank = len(idx)
        fmt = formats.get(name, "dense")
        shape = tuple(extents[ix] for ix in idx)
        arr = gen_values(nrng, shape, drng.choice(PATTERNS), dtype)
        nm = nm_params(fmt)
        if nm and drng.random() < 0.9:
            arr = apply_nm(arr, *nm)
        op = {"values": arr.tolist(), "family": drng.choice(FAMILIES[rank]),
              "seed": drng.randrange(2**31)}
        if drng.random() < 0.03:
            casts = ["float32", "float64", "int64"]
            if not ("scipy" in op["family"]):
                casts.append("float16")                     # scipy.sparse has no float16
            op["cast"] = drng.choice(casts)
        operands[name] = op
    call = drng.choice(["keyword", "keyword", "positional"])
    force_threads = target == "cpu" and drng.random() < 0.3
    # a function of the sum (an epilogue, relu or abs) now and then, where every product
    # reduces the same (at most one) index; its own stream, so older seeds' cases stay
    erng = random.Random(f"{seed}:{number // variants}:epilogue")
    epilogue = None
    if erng.random() < EPILOGUE_RATE and E.reduced_index(tree, out_idx)[0]:
        epilogue = erng.choice(sorted(E.EPILOGUES))
    return {"id": f"{seed}-{number}", "target": target,
            "expr": E.statement(out, out_idx, tree, epilogue), "epilogue": epilogue,
            "out": out, "out_idx": list(out_idx), "tree": tree,
            "tensors": {n: list(i) for n, i in tensors.items()}, "formats": formats,
            "schedule": schedule, "extents": extents, "dtype": dtype, "operands": operands,
            "call": call, "force_threads": force_threads}
