"""all-MiniLM-L6-v2 as a short BERT forward in torch, with mean pooling.

``MiniLM.load(folder)`` builds the encoder from the checkpoint: embeddings (word,
position, token type, LayerNorm), layers of self-attention (``query``, ``key``,
``value``, ``attn_out``: ``nn.Linear``) and a GELU feed-forward (``ffn_in``,
``ffn_out``), each followed by a residual LayerNorm; then the mean over the
tokens the attention mask keeps, L2-normalized: the sentence embedding
sentence-transformers gives for this model.  Every projection is a plain
``nn.Linear`` child, so ``sparsify.py`` can swap it for a sparse module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import read_config, read_safetensors, weights_file

# checkpoint name (under encoder.layer.N.) -> attribute of Layer
LINEARS = {"attention.self.query": "query", "attention.self.key": "key",
           "attention.self.value": "value", "attention.output.dense": "attn_out",
           "intermediate.dense": "ffn_in", "output.dense": "ffn_out"}
NORMS = {"attention.output.LayerNorm": "attn_norm", "output.LayerNorm": "ffn_norm"}


class Layer(nn.Module):
    """One BERT encoder layer (post-LayerNorm, GELU)."""

    def __init__(self, hidden: int, intermediate: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.attn_out = (
            nn.Linear(hidden, hidden) for _ in range(4))
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """``x``: batch x tokens x hidden; ``keep``: batch x 1 x 1 x tokens, True
        where a key token is real (not padding)."""
        b, t, h = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)),
                                             heads(self.value(x)), attn_mask=keep)
        x = self.attn_norm(x + self.attn_out(ctx.transpose(1, 2).reshape(b, t, h)))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class MiniLM(nn.Module):
    """Sentence embeddings: ``model(input_ids, attention_mask)`` -> batch x hidden,
    unit length."""

    def __init__(self, config: dict):
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(config["type_vocab_size"], hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            Layer(hidden, config["intermediate_size"], config["num_attention_heads"], eps)
            for _ in range(config["num_hidden_layers"]))

    @classmethod
    def load(cls, folder) -> "MiniLM":
        """The model of ``folder``'s ``config.json`` and weights, in
        eval mode on the CPU."""
        model = cls(read_config(folder))
        model.load_state_dict(checkpoint_to_state(read_safetensors(weights_file(folder)),
                                                  len(model.layers)))
        return model.eval()

    def residual_sums(self) -> dict[str, str]:
        """For ``spc.torch.prune_calibrated(residual_into=...)``: each linear whose output
        is added to the residual stream, and the LayerNorm that takes the sum."""
        return {f"layers.{i}.{linear}": f"layers.{i}.{norm}" for i in range(len(self.layers))
                for linear, norm in (("attn_out", "attn_norm"), ("ffn_out", "ffn_norm"))}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        t = input_ids.shape[1]
        positions = torch.arange(t, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + \
            self.token_type(torch.zeros_like(input_ids))
        x = self.embed_norm(x)
        keep = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, keep)
        weights = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def checkpoint_to_state(ckpt: dict[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """The HF BertModel checkpoint's tensors renamed to ``MiniLM``'s state_dict."""
    state = {"word.weight": ckpt["embeddings.word_embeddings.weight"],
             "position.weight": ckpt["embeddings.position_embeddings.weight"],
             "token_type.weight": ckpt["embeddings.token_type_embeddings.weight"],
             "embed_norm.weight": ckpt["embeddings.LayerNorm.weight"],
             "embed_norm.bias": ckpt["embeddings.LayerNorm.bias"]}
    for n in range(n_layers):
        for src, dst in (LINEARS | NORMS).items():
            for p in ("weight", "bias"):
                state[f"layers.{n}.{dst}.{p}"] = ckpt[f"encoder.layer.{n}.{src}.{p}"]
    return state
