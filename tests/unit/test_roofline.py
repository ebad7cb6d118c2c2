import json

import pytest

from pipeline import roofline


def quiet(flops: float = 1e9):
    """A stand-in for a measurement in which the process had its CPU (tests must not depend on the load)."""
    return lambda dtype, threads, size, seconds: roofline.Measurement(flops, 1.0, True)


def test_measure_caches_per_key_and_cached_only_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(roofline, "matmul_flops_per_s", quiet())
    path = tmp_path / "roofline.json"
    assert roofline.cached("fp32", 1, path) is None  # nothing measured yet: no measuring either
    assert not path.exists()
    roof = roofline.measure_and_cache("fp32", 1, size=64, seconds=0.01, path=path)
    assert roof.flops_per_s == 1e9 and roof.dtype == "fp32" and roof.threads == 1 and roof.cpus == 1.0
    assert roofline.cached("fp32", 1, path) == roof
    # another thread count or dtype is another key: not measured, so not known
    assert roofline.cached("fp32", 2, path) is None
    assert roofline.cached("bf16", 1, path) is None
    roofline.measure_and_cache("bf16", 1, size=64, seconds=0.01, path=path)
    assert set(json.loads(path.read_text())) == {roofline.machine_key("fp32", 1), roofline.machine_key("bf16", 1)}


def test_a_real_measurement_reports_its_rate_and_the_cpus_it_had():
    m = roofline.matmul_flops_per_s("fp32", 1, size=64, seconds=0.01)
    assert m.flops_per_s > 0
    assert 0 < m.cpus <= 1.5  # one torch thread: at most about one CPU of process time per second


def test_a_measurement_under_load_is_used_but_not_cached(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(roofline, "matmul_flops_per_s",
                        lambda *a: roofline.Measurement(5e8, 1.2, False))
    path = tmp_path / "roofline.json"
    with caplog.at_level("WARNING", logger="pipeline.roofline"):
        roof = roofline.measure_and_cache("fp32", 2, size=64, seconds=0.01, path=path)
    assert roof.flops_per_s == 5e8 and roof.cpus == 1.2
    assert not path.exists()
    assert "this process had 1.2 of" in caplog.text and roofline.MEASURE_COMMAND in caplog.text


def test_only_windows_with_the_cpus_count_and_busy_ones_extend_the_measurement(monkeypatch):
    # threads=1: a window is quiet with at least 0.9 CPUs
    windows = iter([(0.001, 1.0)]  # the first timed call, which sizes the windows
                   + [(0.0005, 0.5), (0.001, 1.0)] + [(0.001, 1.0)] * 10)
    monkeypatch.setattr(roofline, "_timed", lambda call, n: next(windows))
    m = roofline.matmul_flops_per_s("fp32", 1, size=64, seconds=0.01, windows=2)
    assert m.quiet and m.cpus == 1.0
    assert m.flops_per_s == pytest.approx(2 * 64 ** 3 * 5 / 0.001)  # the quiet window, not the faster busy one

    calls = []
    monkeypatch.setattr(roofline, "_timed", lambda call, n: calls.append(n) or (0.001, 0.5))
    m = roofline.matmul_flops_per_s("fp32", 1, size=64, seconds=0.01, windows=2)
    assert not m.quiet and m.cpus == 0.5
    assert len(calls) == 1 + 4 * 2  # the sizing call, then windows until four times the count


def test_key_names_cpu_torch_threads_and_dtype():
    import torch

    key = roofline.machine_key("bf16", 3)
    assert roofline.cpu_model() in key and torch.__version__ in key and "3 threads" in key and key.endswith("bf16")
    assert torch.backends.cpu.get_cpu_capability() in key


def test_cache_lives_under_knowledge_lab_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWLEDGE_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(roofline, "matmul_flops_per_s", quiet())
    assert roofline.cache_path() == tmp_path / roofline.CACHE_FILE
    assert roofline.cached_flops_per_s("fp32", 1) is None
    roofline.measure_and_cache("fp32", 1, size=64, seconds=0.01)
    assert roofline.cached_flops_per_s("fp32", 1) == roofline.cached("fp32", 1).flops_per_s


def test_fraction_of_roof():
    roof = roofline.Roof("fp32", 2, 100e9, 2048, "k")
    assert roofline.fraction(60e9, 2.0, roof) == (30e9, pytest.approx(0.3))
    assert roofline.fraction(60e9, 2.0, None) == (30e9, None)


def entry(flops: float, cpus: float | None) -> dict:
    key = roofline.machine_key("fp32", 1)
    return {key: {"dtype": "fp32", "threads": 1, "flops_per_s": flops, "size": 64, "key": key,
                  **({} if cpus is None else {"cpus": cpus})}}


def test_the_cache_keeps_the_highest_quiet_measurement(tmp_path, monkeypatch):
    monkeypatch.setattr(roofline, "matmul_flops_per_s", quiet(1e9))
    path = tmp_path / "roofline.json"
    path.write_text(json.dumps(entry(1e18, 2.0)))
    assert roofline.measure_and_cache("fp32", 1, size=64, seconds=0.01, path=path).flops_per_s == 1e18
    path.write_text(json.dumps(entry(1.0, 2.0)))
    assert roofline.measure_and_cache("fp32", 1, size=64, seconds=0.01, path=path).flops_per_s == 1e9
    # an entry that does not say what CPU share it had may be a busy one: a quiet measurement replaces it
    path.write_text(json.dumps(entry(1e18, None)))
    assert roofline.measure_and_cache("fp32", 1, size=64, seconds=0.01, path=path).flops_per_s == 1e9
    assert roofline.cached("fp32", 1, path).cpus == 1.0


def test_roof_measures_again_where_the_cached_entry_has_no_cpu_share(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWLEDGE_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(roofline, "matmul_flops_per_s", quiet(1e9))
    roofline.cache_path().write_text(json.dumps(entry(5e8, None)))
    assert roofline.roof("fp32", 1).flops_per_s == 1e9
    monkeypatch.setattr(roofline, "matmul_flops_per_s", lambda *a: pytest.fail("measured again"))
    assert roofline.roof("fp32", 1).flops_per_s == 1e9  # now cached with its share: read, not measured


def test_a_product_slower_than_the_budget_is_timed_once(monkeypatch):
    import torch

    calls = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda *a, **kw: calls.append(1) or mm(*a, **kw))
    assert roofline.matmul_flops_per_s("fp32", 1, size=64, seconds=0.0).flops_per_s > 0
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
