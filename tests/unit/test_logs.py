"""What a run prints: the pipeline's lines tagged by stage, libraries' INFO lines kept off the
console but in the log file, quiet and verbose levels, and progress lines with rate and ETA."""

import io
import logging

import pytest

from pipeline import logs


@pytest.fixture
def console():
    """A stream for the console handler; logging restored afterwards."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {n: logging.getLogger(n).level for n in (*logs.NOISY, *logs.SILENCED, "pipeline", "serve")})
    yield stream
    for h in list(root.handlers):
        if getattr(h, "_knowledge_lab", False):
            root.removeHandler(h)
            h.close()
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_console_shows_the_pipeline_tagged_by_stage_and_keeps_library_info_in_the_file(console, tmp_path):
    log_file = tmp_path / "logs" / "run.log"
    logs.configure(0, log_file, stream=console)
    logging.getLogger("pipeline.train.stage").info("ft: 6 steps")
    logging.getLogger("pipeline.worlds.families").info("built")
    logging.getLogger("filelock").info("Lock acquired")
    logging.getLogger("deepspeed").warning("a real problem")
    logging.getLogger(logs.SILENCED[0]).warning("Failed to query Ray Train Controller actor state")
    lines = console.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "[train] ft: 6 steps", "[data] built", "[deepspeed] a real problem"]
    text = log_file.read_text()
    assert "filelock: Lock acquired" in text and "pipeline.train.stage: ft: 6 steps" in text
    assert "Failed to query" not in text


def test_quiet_hides_info_and_verbose_shows_debug(console):
    logs.configure(-1, stream=console)
    logging.getLogger("pipeline.evaluate.stage").info("scoring")
    logging.getLogger("pipeline.evaluate.stage").warning("skipped 2 items")
    assert console.getvalue().count("\n") == 1 and "[evaluate] skipped 2 items" in console.getvalue()
    console.truncate(0), console.seek(0)
    logs.configure(1, stream=console)
    logging.getLogger("pipeline.evaluate.stage").debug("batch 3")
    logging.getLogger("filelock").info("lock acquired")
    assert "[evaluate] batch 3" in console.getvalue() and "lock acquired" not in console.getvalue()


def test_progress_on_a_pipe_logs_rate_and_eta_at_most_every_interval(caplog, monkeypatch):
    clock = iter([0.0, 10.0, 20.0, 40.0, 80.0])
    monkeypatch.setattr(logs.time, "monotonic", lambda: next(clock))
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    progress = logs.Progress(4, "train ft", unit="steps", every_s=30, stream=io.StringIO())
    progress.update(1)  # t=10: too soon
    progress.update(1)  # t=20: too soon
    progress.update(1, loss="2.5")  # t=40: a line
    progress.close()  # t=80
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "train ft: 3/4 (75%) 0.07 steps/s, elapsed 0:40, ETA 0:13, loss 2.5",
        "train ft: 3/4 (75%) 0.04 steps/s, elapsed 1:20, ETA 0:27",
    ]


def test_tags():
    assert logs.tag("pipeline.train.loop") == "train"
    assert logs.tag("pipeline.worlds.semantic") == "data"
    assert logs.tag("pipeline.cli") == "pipeline"
    assert logs.tag("ray.train._internal") == "ray"


def test_worker_setup_keeps_our_info_and_quiets_the_rest(console):
    logs.worker_setup()  # outside Ray: levels only
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("pipeline.train.loop").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("ray.train").getEffectiveLevel() == logging.WARNING
    # a library logger named after its file has no level of its own: it falls back to the root's
    assert logging.getLogger("/site-packages/ray/train/v2/_internal/execution/context.py").getEffectiveLevel() == logging.WARNING
    assert all(logging.getLogger(n).getEffectiveLevel() == logging.ERROR for n in logs.SILENCED)


def test_a_failed_loop_logs_no_closing_line(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    with pytest.raises(ValueError):
        with logs.Progress(2, "building worlds", every_s=30, stream=io.StringIO()) as progress:
            progress.update(1)
            raise ValueError("bad world")
    assert not caplog.records
