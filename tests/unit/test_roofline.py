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
