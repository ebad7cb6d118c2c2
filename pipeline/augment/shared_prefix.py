"""Attention that reads a batch's shared prefix once per step instead of once per row.

When every row of a batch starts with the same prefix (global augmentation: the world's corpus,
then one target document), the rows' prefix keys and values are the same numbers. Plain SDPA still
reads each row's copy at every decoding step; with a long prefix and a large batch that memory
traffic is a large share of a step on CPU (`bench.augment_prefix_cache` decodes the cached global
generation both ways).

`shared_prefix_attention` splits the keys at the prefix length P:
- prefix: the scores of every row's queries against row 0's prefix keys, one matrix product per
  key/value head (all rows and grouped query heads stacked), then against row 0's prefix values;
- the rest (each row's own tokens: its suffix, padding and generated tokens): per row, masked as
  usual;
and takes one softmax over both parts (a shared running maximum and one denominator), which is
the same attention as over the concatenated keys. When the prefix scores of the whole batch are
large (the prefill of the suffixes: every suffix token against the whole prefix), it goes a few
rows at a time (`SCORE_BYTES`), so that the scores stay in the CPU's caches.

It is registered with transformers as the attention implementation `ATTENTION` (with SDPA's
masks) and is active only inside `shared_prefix(P)`; elsewhere it is transformers' SDPA
unchanged. Inside, whenever its preconditions do not hold (no boolean mask, a prefix column masked
for some query, soft-capping or a sliding window), it copies row 0's prefix into every row and
calls SDPA. The caller guarantees that the first P cached positions of row 0 hold the prefix;
those of the other rows are never read, so `batch_cache` stores the prefix once.
"""

from __future__ import annotations

import contextlib
import contextvars

ATTENTION = "shared_prefix_sdpa"
_PREFIX_LEN: contextvars.ContextVar[int] = contextvars.ContextVar("shared_prefix_len", default=0)
#: Bytes of prefix scores computed at once. The prefill of a batch's suffixes scores every query
#: of every row against the whole prefix (about 100 MB per layer at batch 32); in blocks of rows
#: the scores stay in the CPU's caches instead of going through memory.
SCORE_BYTES = 8 << 20


@contextlib.contextmanager
def shared_prefix(length: int):
    """Within this block, attention treats the first `length` cached positions as shared by all rows."""
    token = _PREFIX_LEN.set(length)
    try:
        yield
    finally:
        _PREFIX_LEN.reset(token)


def shared_prefix_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                            scaling: float | None = None, **kwargs):
    """transformers attention interface: query (B, Hq, q, d), key/value (B, Hkv, L, d) -> (B, q, Hq, d)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    P = _PREFIX_LEN.get()
    if not P:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if (dropout or attention_mask is None or attention_mask.dtype != torch.bool or key.shape[2] <= P
            or kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None
            or not bool(attention_mask[..., :P].all())):
        # Only row 0 is known to hold the prefix (see `batch_cache`): give every row its copy.
        key, value = _prefix_in_every_row(key, P), _prefix_in_every_row(value, P)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    return _split_attention(query, key, value, attention_mask, P, scaling)


def _prefix_in_every_row(t, P: int):
    import torch

    return torch.cat([t[:1, :, :P].expand(t.shape[0], -1, -1, -1), t[:, :, P:]], dim=2)


def _split_attention(query, key, value, attention_mask, P: int, scaling: float | None):
    """Softmax attention over row 0's first P keys/values plus each row's own keys from P on,
    a block of rows at a time when the prefix scores of the whole batch would not fit `SCORE_BYTES`."""
    import torch

    B, Hq, q, d = query.shape
    scale = scaling if scaling is not None else d ** -0.5
    mask = attention_mask[..., P:].expand(B, -1, -1, -1)
    rows = max(1, SCORE_BYTES // (Hq * q * P * query.element_size()))
    blocks = [_attend(query[b:b + rows] * scale, key[0, :, :P], value[0, :, :P],
                      key[b:b + rows, :, P:], value[b:b + rows, :, P:], mask[b:b + rows])
              for b in range(0, B, rows)]
    out = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
    return out.reshape(B, Hq, q, d).transpose(1, 2).contiguous(), None


def _attend(query, prefix_k, prefix_v, own_k, own_v, own_mask):
    """query (b, Hq, q, d), scaled; prefix_k/v (Hkv, P, d), shared by the rows; own_k/v
    (b, Hkv, L, d) with own_mask (b, 1, q, L) -> (b, Hkv, G*q, d), G = Hq // Hkv."""
    import torch

    b, Hq, q, d = query.shape
    Hkv, P = prefix_k.shape[:2]
    G = Hq // Hkv
    # Query heads of one KV group are adjacent (as in repeat_kv): (b, Hkv, G*q, d).
    own_q = query.reshape(b, Hkv, G * q, d)
    prefix_q = own_q.transpose(0, 1).reshape(Hkv, b * G * q, d)
    prefix_s = torch.bmm(prefix_q, prefix_k.transpose(1, 2)).view(Hkv, b, G * q, P)
    own_s = torch.matmul(own_q, own_k.transpose(2, 3))  # (b, Hkv, G*q, L)
    own_s.view(b, Hkv, G, q, -1).masked_fill_(~own_mask[:, :, None], float("-inf"))

    top = torch.maximum(prefix_s.amax(-1).transpose(0, 1), own_s.amax(-1))  # (b, Hkv, G*q)
    prefix_p = prefix_s.sub_(top.transpose(0, 1).unsqueeze(-1)).exp_()
    own_p = own_s.sub_(top.unsqueeze(-1)).exp_()
    denom = prefix_p.sum(-1).transpose(0, 1) + own_p.sum(-1)
    out = torch.bmm(prefix_p.view(Hkv, b * G * q, P), prefix_v).view(Hkv, b, G * q, d).transpose(0, 1)
    return (out + torch.matmul(own_p, own_v)) / denom.unsqueeze(-1)


def batch_cache(config, rows: int, length: int, prefix):
    """A static KV cache for `rows` rows of `length` positions that starts after `prefix` (a cache
    of one row, P positions), written into row 0 only; None when the model has other than plain
    static layers (e.g. sliding windows), and the caller copies the prefix into every row instead.

    The other rows' first P slots are allocated but never written, so their memory is never
    touched: this attention reads row 0's prefix, and its SDPA fallback copies it into every row.
    The rows' own slots are zeroed as in transformers' StaticCache.
    """
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    cache = StaticCache(config=config, max_cache_len=length)
    if len(cache.layers) != len(prefix.layers) or any(type(layer) is not StaticLayer for layer in cache.layers):
        return None
    for layer, src in zip(cache.layers, prefix.layers):
        # The layer's own initialisation for the batch's shapes (all its attributes), at length 0 ...
        layer.max_cache_len = 0
        layer.lazy_initialization(src.keys.expand(rows, -1, -1, -1), src.values.expand(rows, -1, -1, -1))
        layer.max_cache_len = length
        # ... then its tensors at full length, holding the prefix once.
        layer.keys, layer.values = _after_prefix(src.keys, rows, length), _after_prefix(src.values, rows, length)
        layer.cumulative_length.fill_(src.keys.shape[2])
    return cache


def _after_prefix(prefix, rows: int, length: int):
    import torch

    _, heads, P, dim = prefix.shape
    t = torch.empty((rows, heads, length, dim), dtype=prefix.dtype, device=prefix.device)
    t[:, :, P:].zero_()
    t[0, :, :P].copy_(prefix[0])
    return t


def register() -> str:
    """Register the attention (idempotent); returns its implementation name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, shared_prefix_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    return ATTENTION
