"""The fuzzer's reference of the stored-entry semantics (benchmarks/fuzz/pattern.py):
stored() and max/min reductions see the entries the operand as handed over holds, and
the FormatError is expected exactly where a conversion would fill."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import spc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from fuzz.execute import check_result, run_case  # noqa: E402
from fuzz.gen import gen_case  # noqa: E402
from fuzz.pattern import evaluate, expected_refusals, held_mask  # noqa: E402

ROWS = [[-2.0, 0.0, -3.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]]


def _case(expr_tree, fmt: str, family: str, out_idx=("i",), statements=None) -> dict:
    st = statements or [{"out": "m", "out_idx": list(out_idx), "tree": expr_tree,
                         "epilogue": None}]
    return {"statements": st, "tree": st[-1]["tree"], "out": st[-1]["out"],
            "out_idx": st[-1]["out_idx"], "tensors": {"A": ["i", "j"]},
            "extents": {"i": 3, "j": 3}, "formats": {"A": fmt}, "dtype": "float64",
            "epilogue": None, "expr": "",
            "operands": {"A": {"values": ROWS, "family": family, "seed": 0}}}


MAX_A = ["sum", [[1, ["red", "max", "j", ["acc", "A", ["i", "j"]]]]], False]
STORED_A = ["sum", [[1, ["red", "sum", "j", ["stored", ["acc", "A", ["i", "j"]]]]]], False]


def test_max_over_stored_entries_of_a_dense_operand_in_csr():
    """numpy in csr holds its nonzeros: row 0 max -2, an empty row 0, row 2 -1."""
    a = np.array(ROWS)
    case = _case(MAX_A, "csr", "numpy")
    assert evaluate(case, {"A": a}).tolist() == [-2.0, 0.0, -1.0]
    assert evaluate(_case(MAX_A, "dense", "numpy"), {"A": a}).tolist() == [0.0, 0.0, 0.0]


def test_a_scipy_explicit_zero_is_stored():
    m = sp.csr_matrix((np.array([-2.0, 0.0, -3.0]), np.array([0, 1, 2]), np.array([0, 3, 3, 3])),
                      shape=(3, 3))
    case = _case(MAX_A, "csr", "scipy-csr")
    assert evaluate(case, {"A": m}).tolist() == [0.0, 0.0, 0.0]
    assert evaluate(_case(STORED_A, "csr", "scipy-csr"), {"A": m}).tolist() == [3.0, 0.0, 0.0]


def test_a_padded_spc_tensor_counts_its_padding_and_a_conversion_is_refused():
    a = np.array(ROWS)
    t = spc.tensor(a, "dia")
    assert held_mask(t, (3, 3)).sum() > np.count_nonzero(a)          # dia fills diagonals
    case = _case(STORED_A, "dia", "spc")
    assert evaluate(case, {"A": t}).tolist() == held_mask(t, (3, 3)).sum(axis=1).tolist()
    assert expected_refusals(case, {"A": t}) == []
    assert expected_refusals(case, {"A": a}) == ["A"]                 # numpy -> dia fills
    assert expected_refusals(_case(STORED_A, "csr", "numpy"), {"A": a}) == []


def test_a_program_reads_the_sampled_pattern():
    """S = A * 2 stored in csr keeps A's pattern: max over S's row sees only A's stored
    entries; S in the default dense format has every entry."""
    S = {"out": "S", "out_idx": ["i", "j"], "tree": ["sum", [[1, ["mul", [
        ["acc", "A", ["i", "j"]], ["const", "2"]]]]], False], "epilogue": None}
    m = {"out": "m", "out_idx": ["i"], "tree": ["sum", [[1, ["red", "max", "j",
                                                             ["acc", "S", ["i", "j"]]]]], False],
         "epilogue": None}
    case = _case(None, "csr", "numpy", statements=[S, m])
    assert evaluate(case, {"A": np.array(ROWS)}).tolist() == [0.0, 0.0, 0.0]
    case["formats"]["S"] = "csr"
    assert evaluate(case, {"A": np.array(ROWS)}).tolist() == [-4.0, 0.0, -2.0]
    assert check_result(case, np.array([-4.0, 0.0, -2.0]))["outcome"] == "ok"
    assert check_result(case, np.array([0.0, 0.0, 0.0]))["kind"] == "wrong-answer"


def test_spc_agrees_on_generated_pattern_cases():
    """A few generated pattern-reading cases run OK or as the expected refusal."""
    seen = 0
    for n in range(0, 64, 4):
        case = gen_case(7, n, pattern_rate=1.0, weird=0.0)
        res = run_case(case)
        assert res["outcome"] in ("ok", "refused"), (case["expr"], res)
        seen += res["outcome"] == "ok"
    assert seen >= 6
