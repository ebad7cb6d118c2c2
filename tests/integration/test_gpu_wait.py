"""A stage that asks for GPUs waits for the autoscaler, then fails naming the key; never runs on CPU."""

import pytest

from pipeline.config import validate_config
from pipeline.ray_session import GpusUnavailable, wait_for_gpus


def test_gpu_request_times_out_with_a_clear_error(ray_cluster):
    with pytest.raises(GpusUnavailable, match=r"train.use_gpu asks for 2 GPU\(s\); the Ray cluster has 0 after waiting "
                                              r"0.2 s for the autoscaler \(ray.gpu_wait_s\)"):
        wait_for_gpus(2, "train.use_gpu", timeout_s=0.2, poll_s=0.05)
    assert wait_for_gpus(0, "nothing", timeout_s=0) == 0  # nothing asked: no wait


def test_augment_on_cuda_never_falls_back_to_cpu(ray_cluster):
    from pipeline.augment.stage import resolve_device

    cfg = validate_config({"name": "g", "augment": {"device": "cuda"}, "ray": {"gpu_wait_s": 0.1}})
    with pytest.raises(GpusUnavailable, match="augment.device=cuda asks for 1 GPU"):
        resolve_device(cfg)
    assert resolve_device(validate_config({"name": "g", "augment": {"device": "auto"}})) == "cpu"


def test_serve_replicas_on_gpus_wait_for_them_then_fail_naming_the_key(ray_cluster):
    from serve.app import wait_for_replica_gpus

    cfg = validate_config({"name": "g", "serve": {"generation": {"num_gpus": 0.5}}, "ray": {"gpu_wait_s": 0.1}})
    with pytest.raises(GpusUnavailable, match=r"serve.generation.num_gpus=0.5 asks for 1 GPU"):
        wait_for_replica_gpus(cfg)
    wait_for_replica_gpus(validate_config({"name": "g"}))  # CPU replicas: nothing to wait for
