import json

import pytest

from pipeline import roofline


def test_measure_caches_per_key_and_cached_only_reads(tmp_path):
    path = tmp_path / "roofline.json"
    assert roofline.cached("fp32", 1, path) is None  # nothing measured yet: no measuring either
    assert not path.exists()
    roof = roofline.measure_and_cache("fp32", 1, size=64, seconds=0.01, path=path)
    assert roof.flops_per_s > 0 and roof.dtype == "fp32" and roof.threads == 1
    assert roofline.cached("fp32", 1, path) == roof
    # another thread count or dtype is another key: not measured, so not known
    assert roofline.cached("fp32", 2, path) is None
    assert roofline.cached("bf16", 1, path) is None
    roofline.measure_and_cache("bf16", 1, size=64, seconds=0.01, path=path)
    assert set(json.loads(path.read_text())) == {roofline.machine_key("fp32", 1), roofline.machine_key("bf16", 1)}


def test_key_names_cpu_torch_threads_and_dtype():
    import torch

    key = roofline.machine_key("bf16", 3)
    assert roofline.cpu_model() in key and torch.__version__ in key and "3 threads" in key and key.endswith("bf16")
    assert torch.backends.cpu.get_cpu_capability() in key


def test_cache_lives_under_knowledge_lab_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWLEDGE_LAB_CACHE", str(tmp_path))
    assert roofline.cache_path() == tmp_path / roofline.CACHE_FILE
    assert roofline.cached_flops_per_s("fp32", 1) is None
    roofline.measure_and_cache("fp32", 1, size=64, seconds=0.01)
    assert roofline.cached_flops_per_s("fp32", 1) == roofline.cached("fp32", 1).flops_per_s


def test_fraction_of_roof():
    roof = roofline.Roof("fp32", 2, 100e9, 2048, "k")
    assert roofline.fraction(60e9, 2.0, roof) == (30e9, pytest.approx(0.3))
    assert roofline.fraction(60e9, 2.0, None) == (30e9, None)


def test_a_slower_measurement_keeps_the_higher_cached_roof(tmp_path):
    path = tmp_path / "roofline.json"
    key = roofline.machine_key("fp32", 1)
    path.write_text(json.dumps({key: {"dtype": "fp32", "threads": 1, "flops_per_s": 1e18, "size": 64, "key": key}}))
    assert roofline.measure_and_cache("fp32", 1, size=64, seconds=0.01, path=path).flops_per_s == 1e18
    path.write_text(json.dumps({key: {"dtype": "fp32", "threads": 1, "flops_per_s": 1.0, "size": 64, "key": key}}))
    assert roofline.measure_and_cache("fp32", 1, size=64, seconds=0.01, path=path).flops_per_s > 1.0


def test_a_product_slower_than_the_budget_is_timed_once(monkeypatch):
    import torch

    calls = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda *a, **kw: calls.append(1) or mm(*a, **kw))
    assert roofline.matmul_flops_per_s("fp32", 1, size=64, seconds=0.0) > 0
    assert len(calls) == 2  # the warm-up and one timed product, no windows (an emulated bf16 product takes a minute)
    calls.clear()
    roofline.matmul_flops_per_s("fp32", 1, size=64, seconds=0.01, windows=2)
    assert len(calls) > 4


def test_bf16_is_never_measured_where_torch_runs_avx2_kernels(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(roofline, "roof", lambda *a: pytest.fail("measured"))
    assert roofline.bf16_pays(2) is False
