"""The `serve` config section: defaults, cross-field errors naming the key, deployment options."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config


def _load(tmp_path, text: str, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path, list(overrides))


def test_defaults_bind_loopback_and_fit_two_cpus(tmp_path):
    s = _load(tmp_path, "name: x\n").serve
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.generation.num_cpus + s.evaluator.num_cpus + s.ingress.num_cpus <= 2
    assert s.generation.num_gpus == 0
    assert s.default_max_tokens <= s.max_tokens_cap


def test_deployment_options_carry_resources_and_autoscaling(tmp_path):
    s = _load(tmp_path, "name: x\nserve:\n  generation: {num_cpus: 4, num_gpus: 1, min_replicas: 1, max_replicas: 3}\n",
              ["serve.generation.target_ongoing_requests=2"]).serve
    opts = s.generation.deployment_options(s.health_check_period_s, s.health_check_timeout_s)
    assert opts["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 1.0}
    assert opts["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 3,
                                          "target_ongoing_requests": 2.0}
    assert (opts["health_check_period_s"], opts["health_check_timeout_s"]) == (10.0, 30.0)
    assert s.generation.threads() == 4


@pytest.mark.parametrize("cpus,threads", [(0.25, 1), (1, 1), (1.5, 2), (2, 2)])
def test_torch_threads_default_to_the_cpus_rounded_up(tmp_path, cpus, threads):
    assert _load(tmp_path, f"name: x\nserve:\n  generation: {{num_cpus: {cpus}}}\n").serve.generation.threads() == threads


@pytest.mark.parametrize("text,key", [
    ("serve:\n  generation: {min_replicas: 3, max_replicas: 2}\n", "serve.generation: max_replicas"),
    ("serve:\n  default_max_tokens: 300\n  max_tokens_cap: 100\n", "serve: default_max_tokens"),
    ("serve:\n  port: 70000\n", "serve.port"),
    ("serve:\n  max_batch_size: 0\n", "serve.max_batch_size"),
    ("serve:\n  evaluator: {num_gpus: -1}\n", "serve.evaluator.num_gpus"),
    ("serve:\n  max_models: 2\n", "serve.max_models: unknown key"),
])
def test_bad_serve_config_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "name: x\n" + text)
    assert key in str(err.value), str(err.value)


def test_serve_section_may_change_on_an_existing_run(tmp_path):
    from pipeline.runs import Run

    cfg = _load(tmp_path, f"name: x\noutput_dir: {tmp_path}\n")
    Run.of(cfg).save_config(cfg)
    changed = _load(tmp_path, f"name: x\noutput_dir: {tmp_path}\n", ["serve.port=9000", "serve.max_batch_size=1"])
    Run.of(changed).save_config(changed)  # a runtime section: no --force needed
