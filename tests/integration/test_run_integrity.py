"""Runs that cannot go stale, and that survive a killed driver.

Through the CLI on the smoke config (tiny model): a stage is skipped only while its fingerprint
matches; a forced or changed stage makes every later one rerun; a changed config is refused
unless no stage finished or --reconfigure says so; `status` tells done / stale (why) / missing.
Then the driver (`python -m pipeline`, joining this session's Ray cluster) is SIGKILLed in the
middle of augment, train and evaluate, and a re-run ends with exactly what an uninterrupted run
made: the same rows, the same steps and losses, the same scores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.records import Doc, Fact, Score, read_parquet, read_records

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
STAGE_NAMES = ["data", "augment", "train", "evaluate", "report"]


def finished_at(run: Path) -> dict[str, float]:
    return {s: json.loads((run / "manifests" / f"{s}.json").read_text())["finished_at"]
            for s in STAGE_NAMES if (run / "manifests" / f"{s}.json").is_file()}


def write_config(tmp_path: Path, corpus: str) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: r\noutput_dir: {tmp_path / 'runs'}\nmodel: {{ref: tiny-random}}\nconditions: [base]\n"
                   f"data:\n  reversals: {{size: demo, n_facts: 6, articles_per_fact: 2}}\n  corpus: {{path: {corpus}}}\n")
    return cfg


def test_a_first_run_that_failed_accepts_the_fixed_config(tmp_path, capsys):
    cfg = write_config(tmp_path, "missing.jsonl")
    assert main(["data", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"data.corpus: path: '{Path.cwd() / 'missing.jsonl'}' does not exist" in err  # relative: from the working dir
    assert (tmp_path / "runs" / "r" / "config.yaml").is_file() and not (tmp_path / "runs" / "r" / "manifests").exists()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "The glon live north of the femp."}\n')
    assert main(["data", str(write_config(tmp_path, str(corpus)))]) == 0  # no stage had finished: accepted
    docs = read_records(tmp_path / "runs" / "r" / "data" / "docs.parquet", Doc)
    assert sum(d["world"] == "corpus" for d in docs) == 1


def test_a_changed_config_is_refused_then_accepted_with_reconfigure(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "The glon live north of the femp."}\n')
    cfg = str(write_config(tmp_path, str(corpus)))
    assert main(["data", cfg]) == 0
    capsys.readouterr()
    fewer = ["--set", "data.reversals.n_facts=4"]
    assert main(["data", cfg] + fewer) == 2
    err = capsys.readouterr().err
    assert "keys that differ: data.reversals.n_facts" in err and "stages data finished" in err and "--reconfigure" in err
    assert main(["status", cfg] + fewer) == 1  # status compares; it saves nothing
    assert "data is stale: config changed: data.reversals.n_facts" in capsys.readouterr().err
    assert main(["data", cfg, "--reconfigure"] + fewer) == 0  # accepted; data reads the key, so it reruns
    facts = read_records(tmp_path / "runs" / "r" / "data" / "facts.parquet", Fact)
    assert sum(f["world"] == "reversals" for f in facts) == 4
    assert main(["status", cfg] + fewer) == 1  # data is current; the later stages never ran
    out = capsys.readouterr().err
    assert "data      done" in out and "augment   missing" in out
    corpus.write_text('{"text": "The glon live south of the femp."}\n')  # an input file changes
    assert main(["status", cfg] + fewer) == 1
    assert f"data is stale: input {corpus} changed" in capsys.readouterr().err


# ------------------------------------------------------------------ a whole run, then stale and killed stages

RUN_SETTINGS = ["--set", "conditions=[base,icl,ft]", "--set", "train.max_steps=24", "--set", "train.checkpoint_every=4"]


@pytest.fixture(scope="module")
def whole_run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity")
    args = [SMOKE, "--set", f"output_dir={out}"] + RUN_SETTINGS
    assert main(["run"] + args) == 0
    run = out / "smoke"
    baseline = {
        "losses": json.loads((run / "models" / "ft" / "train_log.json").read_text())["losses"],
        "scores": {c: read_records(run / "scores" / f"{c}.parquet", Score) for c in ("base", "icl", "ft")},
    }
    return args, run, baseline


def test_a_rerun_of_a_finished_run_skips_every_stage(whole_run, capsys):
    args, run, _ = whole_run
    stamps = {p.name: p.stat().st_mtime_ns for p in (run / "manifests").iterdir()}
    assert main(["run"] + args) == 0
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (run / "manifests").iterdir()}
    results = json.loads((run / "results.json").read_text())
    assert results["conditions"] == ["base", "icl", "ft"]
    headers = [line for line in (run / "report.md").read_text().splitlines() if line.startswith("| split |")]
    assert headers == ["| split | n | chance | base | icl | ft |"] * 3  # one accuracy table per world
    assert sorted(p.name for p in (run / "plots").glob("*.png")) == ["families.png", "reversals.png", "syllogisms.png"]


def test_status_shows_a_complete_run_and_a_changed_output(whole_run, capsys):
    args, run, _ = whole_run
    capsys.readouterr()
    assert main(["status"] + args) == 0
    out = capsys.readouterr().err
    assert "complete and current" in out and "train     done" in out and "ft 24 steps" in out
    results = run / "results.json"
    original = results.read_bytes()
    try:
        results.write_bytes(original.replace(b'"conditions"', b'"conditions" '))
        assert main(["status"] + args) == 1
        out = capsys.readouterr().err
        assert "evaluate is stale: output results.json changed since the stage finished" in out
        assert "report is stale: upstream evaluate is stale" in out
    finally:
        results.write_bytes(original)
    assert main(["status"] + args) == 0


def test_forced_data_makes_every_later_stage_rerun(whole_run, capsys, caplog):
    args, run, _ = whole_run
    before = finished_at(run)
    assert main(["data", "--force"] + args) == 0
    capsys.readouterr()
    assert main(["status"] + args) == 1
    out = capsys.readouterr().err
    for stage in ("augment", "train", "evaluate", "report"):
        assert f"{stage} is stale: upstream data reran since" in out
    with caplog.at_level("INFO", logger="pipeline"):
        assert main(["run"] + args) == 0
    after = finished_at(run)
    assert all(after[s] > before[s] for s in STAGE_NAMES)  # data by --force, the rest because data changed
    stale_lines = [r.getMessage() for r in caplog.records if "stale (" in r.getMessage()]
    assert len(stale_lines) == 4 and all("upstream data reran since" in line for line in stale_lines)
    # after data, the estimate of the stages to come: the one fit planned step for step
    estimates = [r.getMessage() for r in caplog.records if r.getMessage().startswith("estimate for this machine")]
    assert len(estimates) == 1 and "(1 fit, 24 steps, " in estimates[0], estimates
    assert "train " in estimates[0] and "evaluate " in estimates[0] and "augment" not in estimates[0], estimates  # no augmentation
    assert main(["status"] + args) == 0


class Driver:
    """`python -m pipeline ...` in a subprocess joined to this session's Ray cluster; its output
    is collected line by line, so a test can SIGKILL it when a progress marker appears."""

    def __init__(self, ray_cluster, *args: str):
        address = ray_cluster.get_runtime_context().gcs_address
        cmd = [sys.executable, "-m", "pipeline", *args, "--set", f"ray.address={address}"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "DS_ACCELERATOR": "cpu"})
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True)
        self.reader.start()

    def kill_when(self, ready, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        try:
            while not ready(self.lines):
                if self.proc.poll() is not None:
                    raise AssertionError("the driver ended before the marker:\n" + "".join(self.lines[-40:]))
                if time.time() > deadline:
                    raise AssertionError("no progress marker in time:\n" + "".join(self.lines[-40:]))
                time.sleep(0.05)
        finally:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=60)
            self.reader.join(timeout=10)


def test_driver_killed_mid_train_resumes_from_its_checkpoint(whole_run, ray_cluster):
    args, run, baseline = whole_run
    snapshot = run / "train" / "ft" / "checkpoint_manager_snapshot.json"
    driver = Driver(ray_cluster, "train", "--force", *args)
    driver.kill_when(lambda _: snapshot.is_file())  # a checkpoint is registered; the fit has 24 steps
    assert not (run / "manifests" / "train.json").exists() and not (run / "models" / "ft").exists()
    assert main(["train"] + args) == 0
    summary = json.loads((run / "manifests" / "train.json").read_text())["summary"]["ft"]
    assert summary["skipped"] is False and summary["steps"] == 24
    assert summary["resumed_from_step"] > 0 and summary["resumed_from_step"] % 4 == 0
    losses = json.loads((run / "models" / "ft" / "train_log.json").read_text())["losses"]
    assert losses == baseline["losses"]  # bit-identical: same steps, same data order, same state
    assert not (run / "train").exists()  # the fit's checkpoints are gone once its model is exported


def test_driver_killed_mid_evaluate_reruns_to_the_same_scores(whole_run, ray_cluster):
    args, run, baseline = whole_run
    driver = Driver(ray_cluster, "evaluate", "--force", *args)
    driver.kill_when(lambda lines: any("sequences on" in line for line in lines))
    assert not (run / "manifests" / "evaluate.json").exists()
    assert main(["run"] + args) == 0  # evaluate and report rerun
    for condition, rows in baseline["scores"].items():
        assert read_records(run / "scores" / f"{condition}.parquet", Score) == rows
    assert main(["status"] + args) == 0


@pytest.fixture(scope="module")
def augment_run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("augment-kill")
    args = [SMOKE, "--set", f"output_dir={out}", "--set", "conditions=[base,ft+local]", "--set", "augment.shard_size=4"]
    assert main(["data"] + args) == 0 and main(["augment"] + args) == 0
    return args, out / "smoke"


def generations(shards: Path) -> dict[str, list[dict]]:
    """Every shard's raw generations, by shard file."""
    return {p.name: read_parquet(p).to_pylist() for p in sorted(shards.glob("*.parquet"))}


def test_driver_killed_mid_augment_loses_and_doubles_nothing(augment_run, ray_cluster):
    args, run = augment_run
    shards = run / "augment" / "shards"
    before = read_records(run / "augment" / "augmented.parquet", Doc)
    raw_before = generations(shards)
    audit_before = json.loads((run / "augment" / "audit.json").read_text())
    start = time.time()
    driver = Driver(ray_cluster, "augment", "--force", *args)

    def new_shards(_):  # written by this driver, after --force dropped the old ones
        return shards.is_dir() and any(p.stat().st_mtime > start for p in shards.glob("*.parquet"))

    driver.kill_when(new_shards)
    written = sorted(p.name for p in shards.glob("*.parquet"))
    assert not (run / "manifests" / "augment.json").exists() and 0 < len(written) < audit_before["run"]["shards"]
    assert main(["augment"] + args) == 0
    raw = generations(shards)
    assert raw == raw_before  # every prompt's generation once, the same as the uninterrupted run's
    ids = [r["request_id"] for rows in raw.values() for r in rows]
    assert len(ids) == len(set(ids)) == audit_before["run"]["prompts"]
    assert read_records(run / "augment" / "augmented.parquet", Doc) == before
    audit = json.loads((run / "augment" / "audit.json").read_text())
    assert audit["run"]["prompts"] == audit_before["run"]["prompts"] and audit["run"]["retried_prompts"] == 0
    assert len(list(shards.glob("*.parquet"))) == audit["run"]["shards"]
