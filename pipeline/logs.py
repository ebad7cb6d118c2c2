"""What a run prints: the pipeline's own lines on the console, everything else in a log file.

- `configure(verbosity, log_file)`: one format for the console (`HH:MM:SS message`); the
  pipeline's loggers at INFO (WARNING with --quiet, DEBUG with --verbose); Ray's, DeepSpeed's and
  transformers' loggers only at WARNING on the console, and everything at INFO in `log_file`.
- `worker_setup()`: the same quieting inside every Ray worker process (passed to `ray.init` as
  the runtime env's `worker_process_setup_hook`), so worker lines the driver shows are ours.
- `Progress`: a progress bar with rate and ETA for a loop a user waits on: tqdm on a terminal; on
  a pipe (CI, `ray job logs`) one log line at most every `every_s` seconds and at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

FORMAT = "%(asctime)s [%(tag)s] %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"
#: Libraries whose INFO chatter stays off the console (it still reaches the log file).
NOISY = ("ray", "deepspeed", "transformers", "filelock", "urllib3", "httpx", "peft", "accelerate")
#: Loggers silenced below ERROR everywhere: without the dashboard (local clusters start without it)
#: Ray Train's placement-group cleaner warns every few seconds that the State API is missing.
SILENCED = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",
            "ray.data._internal.progress")  # "Progress bars disabled" once per dataset
#: Packages whose lines are tagged with the stage they serve.
TAGS = {"worlds": "data", "augment": "augment", "train": "train", "evaluate": "evaluate", "report": "report", "data": "data"}
#: Suffix of the loggers that print a stage's results (`results_logger`): shown even with --quiet.
RESULTS = ".results"
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _Console(logging.Filter):
    """Lets the pipeline's records through at the chosen level, others at WARNING and above."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == "pipeline" or record.name.startswith(("pipeline.", "serve.", "bench."))
        record.tag = tag(record.name)
        if ours and record.name.endswith(RESULTS):  # a stage's results: shown even with --quiet
            return record.levelno >= min(self.level, logging.INFO)
        return record.levelno >= (self.level if ours else max(self.level, logging.WARNING))


def tag(logger_name: str) -> str:
    """The console tag of a logger: the stage for the pipeline's modules, else the library."""
    parts = logger_name.split(".")
    if parts[0] == "pipeline" and len(parts) > 2:
        return TAGS.get(parts[1], parts[1])
    return "pipeline" if parts[0] == "pipeline" else parts[0]


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever sys.stderr is when a record arrives (it may be replaced)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(verbosity: int = 0, log_file: Path | None = None, stream=None) -> None:
    """Console (`stream`, default stderr) and file logging for the CLI; `verbosity` -1 (quiet),
    0 or 1 (verbose). Calling it again replaces what an earlier call set up."""
    level = LEVELS[max(-1, min(1, verbosity))]
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_knowledge_lab", False):
            root.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler(stream) if stream is not None else _Stderr()
    console.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    console.addFilter(_Console(level))
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
        handlers[-1].setFormatter(logging.Formatter(FILE_FORMAT))
    for handler in handlers:
        handler._knowledge_lab = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))
    for name in NOISY:  # INFO reaches the file; the console filter keeps it off the console
        logging.getLogger(name).setLevel(logging.INFO if log_file is not None or level < logging.INFO else logging.WARNING)
    for name in SILENCED:
        logging.getLogger(name).setLevel(logging.ERROR)


def results_logger(stage: str) -> logging.Logger:
    """The logger a stage prints its results table with (kept on the console by --quiet)."""
    return logging.getLogger(f"pipeline.{stage}{RESULTS}")


def worker_setup() -> None:
    """Runs in every Ray worker process: quiet libraries, keep the pipeline's own INFO lines.

    It also names the worker's own cluster in RAY_ADDRESS, so that library code which looks the
    cluster up (Ray Train's placement-group cleaner) finds this one on a machine running several."""
    import os

    import ray

    if ray.is_initialized():
        os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    # loggers without a level of their own (some are named after their file) fall back to the root's
    logging.getLogger().setLevel(logging.WARNING)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in SILENCED:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("pipeline", "serve"):
        logging.getLogger(name).setLevel(logging.INFO)


class Progress:
    """Count `total` units of work named `desc`; a bar on a terminal, else periodic log lines."""

    def __init__(self, total: int, desc: str, unit: str = "it", logger: logging.Logger | None = None,
                 every_s: float = 30.0, stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.log = logger or logging.getLogger("pipeline.progress")
        self.every_s = every_s
        self.done = 0
        self.start = self.last = time.monotonic()
        stream = stream if stream is not None else sys.stderr
        self.bar = None
        if getattr(stream, "isatty", lambda: False)() and self.log.isEnabledFor(logging.INFO):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=stream, leave=False)

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            self.log.info(self.line(now, postfix))

    def line(self, now: float | None = None, postfix: dict | None = None) -> str:
        """`desc: 12/48 (25%) 3.10 it/s, elapsed 0:04, ETA 0:12` plus any postfix values."""
        elapsed = (now if now is not None else time.monotonic()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = (f"{self.desc}: {self.done}/{self.total}{pct} {rate:.2f} {self.unit}/s, elapsed {_clock(elapsed)}"
                + (f", ETA {_clock(eta)}" if eta is not None and self.done < self.total else ""))
        return text + "".join(f", {k} {v}" for k, v in (postfix or {}).items())

    def close(self, **postfix) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.info(self.line(postfix=postfix))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        elif self.bar is not None:  # a failed loop: no closing line that reads like a finished one
            self.bar.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"
