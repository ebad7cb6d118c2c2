"""The HF engine on a tiny model whose weights are scaled up so greedy outputs vary by prompt."""

import pytest
import torch

from pipeline.augment.engines import HFEngine
from pipeline.augment.generation import generate_shard
from pipeline.models import load_model, load_tokenizer

PREFIX = "Documents:\nFemp are bigger than glon.\n\nYomp are redder than troff.\n\n"
SUFFIXES = ["Target document:\nFemp.", "Target document:\nGlon are small and round, and troff too.", "x"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory):
    model, tok = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    out = tmp_path_factory.mktemp("peaky")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return HFEngine(str(out), batch_size=2, threads=1)


def test_greedy_with_cached_prefix_equals_reencoding_the_prefix(engine):
    cached = engine.generate_with_prefix(PREFIX, SUFFIXES, max_new_tokens=20)
    fresh = engine.generate_with_prefix(PREFIX, SUFFIXES, max_new_tokens=20, use_cache=False)
    assert [g[0].token_ids for g in cached] == [g[0].token_ids for g in fresh]
    assert len({g[0].token_ids for g in cached}) == len(SUFFIXES)  # the outputs differ by prompt
    assert all(0 < g[0].new_tokens <= 20 for g in cached)
    # and each equals the prompt generated alone, unpadded, as one string of ids
    for suffix, got in zip(SUFFIXES, cached):
        ids = engine.encode(PREFIX) + engine.encode(suffix, first=False)
        out = engine.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=20, do_sample=False, pad_token_id=engine.pad_id, eos_token_id=engine.stop_ids)
        alone = out[0, len(ids):].tolist()
        alone = alone[:next((i for i, t in enumerate(alone) if t in engine.stop_ids), len(alone))]
        assert tuple(alone) == got[0].token_ids


def test_cached_prefix_is_attended_once_per_batch(engine, monkeypatch):
    from pipeline.augment import shared_prefix

    split = shared_prefix._split_attention
    lengths = []
    monkeypatch.setattr(shared_prefix, "_split_attention", lambda q, k, v, m, P, s: lengths.append(P) or split(q, k, v, m, P, s))
    engine.generate_with_prefix(PREFIX, SUFFIXES[:2], max_new_tokens=3, use_cache=False)
    assert lengths == []  # re-encoding: every row attends its own prefix (plain SDPA)
    engine.generate_with_prefix(PREFIX, SUFFIXES[:2], max_new_tokens=3)
    layers = engine.model.config.num_hidden_layers
    assert lengths == [len(engine.encode(PREFIX))] * (3 * layers)  # suffix prefill + 2 decoding steps, every layer


def test_batch_cache_stores_the_prefix_once_for_the_shared_attention(engine):
    ids, prefix = engine.prefix_cache(PREFIX)
    P = len(ids)
    cache = engine.batch_cache(3, P + 6, prefix)
    assert cache.get_seq_length() == P
    for layer, src in zip(cache.layers, prefix.layers):
        assert layer.keys.shape == layer.values.shape == (3, src.keys.shape[1], P + 6, src.keys.shape[3])
        assert torch.equal(layer.keys[0, :, :P], src.keys[0]) and torch.equal(layer.values[0, :, :P], src.values[0])
        assert not layer.keys[:, :, P:].any() and not layer.values[:, :, P:].any()  # the rows' own slots start at zero
    engine.share_prefix_attention = False  # plain SDPA reads every row's prefix: it is copied into each
    try:
        full = engine.batch_cache(3, P + 6, prefix)
    finally:
        engine.share_prefix_attention = True
    assert full.get_seq_length() == P
    assert all(torch.equal(f.keys[:, :, :P], src.keys.expand(3, -1, -1, -1)) for f, src in zip(full.layers, prefix.layers))


def test_prefix_is_encoded_once_and_its_cache_never_mutated(engine):
    before = engine.prefix_encodings
    engine.generate_with_prefix(PREFIX + "Once.", SUFFIXES, max_new_tokens=5)
    ids, cache = engine.prefix_cache(PREFIX + "Once.")
    length = cache.get_seq_length()
    assert length == len(ids)
    engine.generate_with_prefix(PREFIX + "Once.", SUFFIXES[:1], max_new_tokens=5)
    assert engine.prefix_encodings == before + 1
    assert cache.get_seq_length() == length


def test_generate_n_samples_seeded(engine):
    a = engine.generate(["Femp are big.", "Glon"], n=3, max_new_tokens=8, temperature=1.0, seed=7)
    b = engine.generate(["Femp are big.", "Glon"], n=3, max_new_tokens=8, temperature=1.0, seed=7)
    assert [len(x) for x in a] == [3, 3]
    assert a == b
    assert len({g.token_ids for g in a[0]}) > 1  # samples differ
    assert a[0][0].prompt_tokens == len(engine.encode("Femp are big."))


class EmptyEngine:
    def generate(self, prompts, **kw):
        from pipeline.augment.engines import Generation

        return [[Generation("", 0, 3)] for _ in prompts]


def test_generate_shard_records_empty_generations():
    shard = {"shard": "local-w-0000", "prefix_key": "", "prefix": "",
             "requests": [{"request_id": f"r{i}", "prompt": "p", "max_new_tokens": 4, "seed": 1} for i in range(2)]}
    rows = generate_shard(EmptyEngine(), shard, 0.0)
    assert [r["status"] for r in rows] == ["empty", "empty"] and [r["request_id"] for r in rows] == ["r0", "r1"]
