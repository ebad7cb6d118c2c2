"""The shared-prefix attention equals SDPA over the full keys when the rows share their prefix."""

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from pipeline.augment import shared_prefix
from pipeline.augment.shared_prefix import shared_prefix_attention


class Attn(torch.nn.Module):
    num_key_value_groups = 2
    is_causal = True


def inputs(q: int, B: int = 3, Hkv: int = 2, G: int = 2, P: int = 7, L: int = 16, d: int = 8, seed: int = 0):
    """Random q/k/v whose first P keys/values are the same in every row, and an SDPA-style boolean
    mask: the prefix visible, then per row left padding, the causal suffix, unwritten slots hidden."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(B, Hkv * G, q, d, generator=g)
    key, value = torch.randn(B, Hkv, L, d, generator=g), torch.randn(B, Hkv, L, d, generator=g)
    key[:, :, :P], value[:, :, :P] = key[:1, :, :P], value[:1, :, :P]
    filled = L - 3  # positions [0, filled) written; the last query sits at filled - 1
    mask = torch.zeros(B, 1, q, L, dtype=torch.bool)
    for b in range(B):
        pad = b  # row b has b padding slots right after the prefix
        for i in range(q):
            pos = filled - q + i
            mask[b, 0, i, :pos + 1] = True
            mask[b, 0, i, P:P + pad] = False
    return query, key, value, mask, P


@pytest.mark.parametrize("q", [1, 4])
def test_equals_sdpa_over_the_whole_cache(q):
    query, key, value, mask, P = inputs(q)
    want, _ = sdpa_attention_forward(Attn(), query, key, value, mask, scaling=0.3)
    with shared_prefix.shared_prefix(P):
        got, _ = shared_prefix_attention(Attn(), query, key, value, mask, scaling=0.3)
    assert got.shape == want.shape == (3, q, 4, 8)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_reads_the_prefix_of_row_zero_only():
    query, key, value, mask, P = inputs(1)
    with shared_prefix.shared_prefix(P):
        a, _ = shared_prefix_attention(Attn(), query, key, value, mask)
        key[1:, :, :P] = 0.0  # other rows' prefix copies are never read
        b, _ = shared_prefix_attention(Attn(), query, key, value, mask)
    assert torch.equal(a, b)


def test_blocks_of_rows_give_the_same_attention(monkeypatch):
    query, key, value, mask, P = inputs(4, B=5)
    with shared_prefix.shared_prefix(P):
        whole, _ = shared_prefix_attention(Attn(), query, key, value, mask, scaling=0.3)
        monkeypatch.setattr(shared_prefix, "SCORE_BYTES", 2 * 4 * 4 * P * 4)  # two rows' prefix scores
        blocks, _ = shared_prefix_attention(Attn(), query, key, value, mask, scaling=0.3)
    want, _ = sdpa_attention_forward(Attn(), query, key, value, mask, scaling=0.3)
    torch.testing.assert_close(blocks, whole, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(blocks, want, atol=1e-5, rtol=1e-5)


def test_fallback_gives_every_row_the_prefix_of_row_zero():
    query, key, value, mask, P = inputs(2)
    masked = mask.clone()
    masked[1, 0, 1, 3] = False  # forces the SDPA fallback
    want, _ = sdpa_attention_forward(Attn(), query, key, value, masked)
    key[1:, :, :P], value[1:, :, :P] = float("nan"), float("nan")  # a cache holding the prefix in row 0 only
    with shared_prefix.shared_prefix(P):
        got, _ = shared_prefix_attention(Attn(), query, key, value, masked)
    torch.testing.assert_close(got, want)


def test_falls_back_to_sdpa_outside_the_block_or_with_a_masked_prefix_column(monkeypatch):
    calls = []
    monkeypatch.setattr(shared_prefix, "_split_attention", lambda *a: calls.append(1) or (None, None))
    query, key, value, mask, P = inputs(4)
    want, _ = sdpa_attention_forward(Attn(), query, key, value, mask)
    outside, _ = shared_prefix_attention(Attn(), query, key, value, mask)
    masked = mask.clone()
    masked[0, 0, 0, 2] = False  # e.g. a sliding window: the prefix is not visible to every query
    with shared_prefix.shared_prefix(P):
        window, _ = shared_prefix_attention(Attn(), query, key, value, masked)
        shared_prefix_attention(Attn(), query, key, value, mask)
    assert torch.equal(outside, want)
    assert torch.equal(window, sdpa_attention_forward(Attn(), query, key, value, masked)[0])
    assert calls == [1]  # only the call whose preconditions hold takes the split path


def test_block_restores_the_previous_length():
    with shared_prefix.shared_prefix(5):
        with shared_prefix.shared_prefix(0):
            assert shared_prefix._PREFIX_LEN.get() == 0
        assert shared_prefix._PREFIX_LEN.get() == 5
    assert shared_prefix._PREFIX_LEN.get() == 0
