r"""A small GPT-style character-level Transformer with a pluggable norm and its placement.

A decoder-only Transformer (Radford et al. 2018/2019; layout as in Karpathy's nanoGPT): token and learned position
embeddings, ``n_layer`` blocks of causal multi-head self-attention and a 4× GELU MLP, and a linear head tied to the
token embedding. Where the norm sits is the ``placement``:

* ``"pre"`` (pre-norm, GPT-2, Xiong et al. 2020): :math:`x \leftarrow x + f(\mathrm{norm}(x))` for each sub-layer
  :math:`f`, with a final norm before the head;
* ``"post"`` (post-norm, the original Transformer of Vaswani et al. 2017): :math:`x \leftarrow \mathrm{norm}(x + f(x))`,
  no final norm.

``norm`` is any registry name (``layer_norm``, ``rms_norm``, ``dynamic_tanh`` — Zhu et al. 2025's
normalization-free replacement —, ``scale_norm``, ``batch_norm``, ``none``), a class or a partial; see
:func:`normlab.lab.models.norms.sequence_norm` for the norms refused because they would break causality.
Weights are :math:`\mathcal{N}(0, 0.02^2)`, residual output projections :math:`\mathcal{N}(0, (0.02/\sqrt{2L})^2)`
(GPT-2).

Examples:
    >>> model = CharTransformer(vocab_size=65, norm="rms_norm", placement="pre", n_layer=2, n_embd=32, n_head=4,
    ...                         block_size=16)
    >>> model(torch.randint(0, 65, (3, 16))).shape
    torch.Size([3, 16, 65])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.lab.models.norms import NormArg, sequence_norm

__all__ = ["CharTransformer", "TransformerBlock", "CausalSelfAttention", "char_transformer", "PLACEMENTS"]

PLACEMENTS = ("pre", "post")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position :math:`t` attends to positions :math:`\\le t`.

    Shape:
        - Input: :math:`(B, T, C)`; Output: :math:`(B, T, C)`.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, steps, channels = x.shape
        q, k, v = self.qkv(x).split(channels, dim=2)  # (B, T, C) each
        q, k, v = (t.view(batch, steps, self.n_head, channels // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)  # (B, H, T, C/H)
        y = y.transpose(1, 2).reshape(batch, steps, channels)
        return self.resid_dropout(self.proj(y))


class TransformerBlock(nn.Module):
    """Attention and MLP sub-layers with residual connections and norms placed ``"pre"`` or ``"post"``."""

    def __init__(self, n_embd: int, n_head: int, norm: NormArg, placement: str, dropout: float, bias: bool,
                 norm_kwargs: dict) -> None:
        super().__init__()
        self.placement = placement
        self.norm1 = sequence_norm(norm, n_embd, **norm_kwargs)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.norm2 = sequence_norm(norm, n_embd, **norm_kwargs)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd, bias=bias), nn.GELU(),
                                 nn.Linear(4 * n_embd, n_embd, bias=bias), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        if self.placement == "pre":
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class CharTransformer(nn.Module):
    """A GPT-style character-level language model (see the module docstring).

    Args:
        vocab_size: number of distinct tokens (characters).
        norm: normalization of every block (registry name, class, partial or ``"none"``).
        placement: ``"pre"`` or ``"post"``.
        n_layer: number of blocks L.
        n_head: attention heads.
        n_embd: width C.
        block_size: the longest context (positions with a learned embedding).
        dropout: dropout on attention weights, residual branches and embeddings.
        bias: biases in the linear layers.
        norm_kwargs: extra arguments for every norm layer (e.g. ``eps``, ``alpha_init``).

    Shape:
        - Input: :math:`(B, T)` token ids with :math:`T \\le` ``block_size``; Output: :math:`(B, T, V)` logits.
    """

    def __init__(self, vocab_size: int, norm: NormArg = "layer_norm", placement: str = "pre", *, n_layer: int = 4,
                 n_head: int = 4, n_embd: int = 128, block_size: int = 128, dropout: float = 0.0, bias: bool = True,
                 norm_kwargs: dict | None = None) -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be 'pre' (pre-norm) or 'post' (post-norm), got {placement!r}")
        for name, value in (("vocab_size", vocab_size), ("n_layer", n_layer), ("n_head", n_head),
                            ("n_embd", n_embd), ("block_size", block_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        norm_kwargs = dict(norm_kwargs or {})
        self.block_size, self.placement = block_size, placement
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(n_embd, n_head, norm, placement, dropout, bias, norm_kwargs)
                                    for _ in range(n_layer))
        self.final_norm = sequence_norm(norm, n_embd, **norm_kwargs) if placement == "pre" else nn.Identity()
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight  # weight tying (Press & Wolf 2017)
        for name, parameter in self.named_parameters():
            if parameter.dim() == 2:  # linear and embedding weights
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn.proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(parameter, 0.0, std)
            elif name.endswith("bias") and "norm" not in name:
                nn.init.zeros_(parameter)

    def forward(self, tokens: Tensor) -> Tensor:
        steps = tokens.shape[1]
        if steps > self.block_size:
            raise ValueError(f"sequence length {steps} exceeds block_size {self.block_size}")
        positions = torch.arange(steps, device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))  # (B, T, V)


def char_transformer(norm: NormArg = "layer_norm", vocab_size: int = 65, **kwargs) -> CharTransformer:
    """A :class:`CharTransformer` (default vocabulary: the 65 characters of Tiny Shakespeare)."""
    return CharTransformer(vocab_size, norm, **kwargs)
