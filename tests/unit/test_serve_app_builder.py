"""The Serve config file and its application builder (no cluster needed to build an app)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.records import Item, write_records

ROOT = Path(__file__).resolve().parents[2]


def test_serve_config_file_is_a_valid_serve_config_bound_to_loopback():
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((ROOT / "serve" / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.parse_obj(raw)
    assert schema.http_options.host == "127.0.0.1" and schema.http_options.port == 8000
    (app,) = schema.applications
    module, _, attr = app.import_path.partition(":")
    assert module == "serve.app" and attr == "app_from_args"
    assert (ROOT / app.args["config"]).is_file()


def test_builder_needs_a_config_path():
    from serve.app import app_from_args

    with pytest.raises(ValueError, match="args.config"):
        app_from_args({})


def test_builder_refuses_an_unfinished_run_and_builds_a_finished_one(tmp_path):
    from ray.serve import Application

    from serve.app import app_from_args

    config = tmp_path / "c.yaml"
    config.write_text(f"name: r\noutput_dir: {tmp_path}\nmodel: {{ref: tiny-random}}\n")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "r")):
        app_from_args({"config": str(config)})
    write_records(tmp_path / "r" / "data" / "items.parquet", Item, [{
        "item_id": "i0", "world": "w", "split": "s", "subtask": "t", "prompt": "p", "choices": ["a", "b"],
        "answer_index": 0}])
    assert isinstance(app_from_args({"config": str(config), "overrides": ["serve.max_batch_size=2"]}), Application)
