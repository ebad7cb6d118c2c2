import pytest
import yaml

from pipeline.config import ConfigError, RunConfig, apply_override, differing_keys, load_config
from pipeline.runs import Run


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path, text, overrides=()):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, list(overrides))
    msg = str(err.value)
    assert str(path) in msg, msg
    return msg


def test_minimal_config_gets_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\n"))
    assert cfg.output_dir == "runs"
    assert cfg.run_dir.as_posix() == "runs/x"
    assert cfg.model.ref == "smollm2-135m-instruct"
    assert cfg.strategies() == ["local", "global", "oracle"]


def test_unknown_key_is_named_with_suggestion(tmp_path):
    msg = error_of(tmp_path, "name: x\ntrain:\n  lrr: 0.1\n")
    assert "train.lrr: unknown key" in msg and "did you mean 'lr'" in msg


def test_unknown_top_level_key(tmp_path):
    assert "modle: unknown key" in error_of(tmp_path, "name: x\nmodle: {ref: a}\n")


def test_wrong_type_names_key_and_value(tmp_path):
    msg = error_of(tmp_path, "name: x\ntrain:\n  batch_size: many\n")
    assert "train.batch_size" in msg and "'many'" in msg


def test_out_of_range_value(tmp_path):
    assert "train.lr" in error_of(tmp_path, "name: x\ntrain: {lr: -1}\n")


def test_missing_required_name(tmp_path):
    assert "name: required key is missing" in error_of(tmp_path, "seed: 1\n")


def test_unknown_condition_is_named(tmp_path):
    msg = error_of(tmp_path, "name: x\nconditions: [base, ft+magic]\n")
    assert "conditions" in msg and "ft+magic" in msg


def test_bad_literal_choice(tmp_path):
    assert "train.sentence_split" in error_of(tmp_path, "name: x\ntrain: {sentence_split: words}\n")


def test_top_level_not_a_mapping(tmp_path):
    assert "mapping" in error_of(tmp_path, "- a\n- b\n")


def test_set_override_parses_yaml_values(tmp_path):
    path = write(tmp_path, "name: x\n")
    cfg = load_config(path, ["train.lr=3e-4", "conditions=[base, icl]", "output_dir=/tmp/o"])
    assert cfg.train.lr == 3e-4
    assert cfg.conditions == ["base", "icl"]
    assert cfg.run_dir.as_posix() == "/tmp/o/x"


def test_set_override_errors_name_the_key(tmp_path):
    assert "train.nope: unknown key" in error_of(tmp_path, "name: x\n", ["train.nope=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override({}, "train.lr")
    with pytest.raises(ConfigError, match="name is a value, not a section"):
        apply_override({"name": "x"}, "name.sub=1")


def test_saved_config_round_trips_and_changed_config_is_refused(tmp_path):
    cfg = load_config(write(tmp_path, f"name: r\noutput_dir: {tmp_path}/runs\n"))
    run = Run.of(cfg)
    run.save_config(cfg)
    saved = yaml.safe_load(run.config_path.read_text())
    assert RunConfig.model_validate(saved) == cfg
    run.save_config(cfg)  # same config: accepted
    changed = cfg.model_copy(update={"seed": 7})
    assert run.save_config(changed) == ["seed"]  # no stage has finished: a new config is accepted
    run.mark_done("data", {}, 0.0)
    with pytest.raises(ConfigError, match=r"keys that differ: seed\) and stages data finished with it; add --reconfigure"):
        run.save_config(cfg)
    run.save_config(cfg, reconfigure=True)
    assert yaml.safe_load(run.config_path.read_text())["seed"] == 0


def test_differing_keys_ignores_runtime_sections():
    assert differing_keys({"a": {"b": 1}, "ray": {"x": 1}}, {"a": {"b": 2}, "ray": {"x": 2}}) == ["a.b"]


def test_generator_defaults_to_the_model_under_study(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\nmodel: {ref: tiny-random}\n"))
    assert cfg.augment.generator.ref == "tiny-random"
    cfg = load_config(write(tmp_path, "name: x\nmodel: {ref: tiny-random}\naugment: {generator: {ref: /m/big}}\n"))
    assert cfg.augment.generator.ref == "/m/big"


def test_the_generators_icl_is_a_condition_only_where_another_model_writes_the_augmentations(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\nmodel: {ref: tiny-random}\n"))
    assert "icl-generator" not in cfg.conditions and "icl" in cfg.conditions  # not a default
    cfg = load_config(write(tmp_path, "name: x\nmodel: {ref: tiny-random}\nconditions: [icl, icl-generator]\n"
                                      "augment: {generator: {ref: /m/big}}\n"))
    assert cfg.conditions == ["icl", "icl-generator"]
    with pytest.raises(ConfigError, match=r"conditions: 'icl-generator' .*model under study \('tiny-random'\).*augment.generator.ref"):
        load_config(write(tmp_path, "name: x\nmodel: {ref: tiny-random}\nconditions: [icl, icl-generator]\n"))


def test_every_shipped_config_validates():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    paths = sorted(root.rglob("*.yaml"))
    assert len(paths) >= 7
    for path in paths:
        cfg = load_config(path)
        assert cfg.name and cfg.conditions, path


def test_an_output_dir_uri_without_a_bucket_is_refused_naming_the_key():
    from pipeline.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"output_dir: 's3://' names no bucket or folder; e\.g\. s3://BUCKET/runs"):
        validate_config({"name": "r", "output_dir": "s3://"})
    assert validate_config({"name": "r", "output_dir": "s3://bucket/runs"}).output_dir == "s3://bucket/runs"
