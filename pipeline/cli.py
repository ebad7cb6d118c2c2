"""`python -m pipeline <command> CONFIG [--set key=value ...]`.

Exit codes: 0 success, 2 usage or config error, 1 runtime failure. Errors are one line (a
traceback only with --debug).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from pipeline import logs
from pipeline.config import ConfigError, load_config
from pipeline.records import RecordError
from pipeline.runs import Run
from pipeline.stages import STAGES, needs_ray, run_stage, stage_state

HELP = {
    "data": "build the knowledge sets (worlds) and the user's corpus: data/*.parquet",
    "augment": "augment the training corpus with in-context inferences on Ray Data: augment/",
    "train": "fine-tune once per FT condition with Ray Train + DeepSpeed: models/<condition>/",
    "evaluate": "score every test item under every condition: scores/, results.json",
    "report": "write report.md, plots/ and the cost model from the scores",
    "run": "run every stage in order, skipping finished ones",
    "serve": "serve a finished run (evaluator and tuned models) on Ray Serve",
    "status": "show each stage: done, stale (and why) or missing, with timing and key numbers; exit 0 when complete",
}


log = logging.getLogger("pipeline.cli")


class UsageError(ValueError):
    """Bad command-line usage (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Teach a language model new knowledge in-context, by fine-tuning, or by "
        "fine-tuning on ICL-augmented data, and compare how each generalizes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("config", metavar="CONFIG", help="YAML run config, e.g. configs/demo.yaml")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.lr=1e-4 (repeatable)")
        p.add_argument("--force", action="store_true",
                       help="redo the stage (every stage, for run) even if done and current; later stages then rerun too")
        p.add_argument("--reconfigure", action="store_true",
                       help="accept a config that differs from the one saved in the run folder; the stages that "
                       "read a changed key rerun (a folder where no stage finished accepts a new config anyway)")
        p.add_argument("--debug", action="store_true", help="print tracebacks on errors")
        loud = p.add_mutually_exclusive_group()
        loud.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and the final results")
        loud.add_argument("-v", "--verbose", action="store_true", help="debug lines too, and libraries' INFO lines")
    return parser


def execute(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    run = Run.of(cfg)
    if args.command == "status":
        from pipeline.status import format_status, status_rows

        rows = status_rows(cfg, run)
        logs.results_logger("status").info("%s", format_status(rows, run))
        return 0 if all(r["state"] == "done" for r in rows) else 1
    run.save_config(cfg, reconfigure=args.reconfigure)
    if "://" not in str(run.dir):  # every line, libraries' included, also goes to the run folder
        logs.configure(args.verbose - args.quiet, Path(run.dir) / "logs" / f"{args.command}.log")
    if args.command == "serve":
        from serve.app import main as serve_main

        return serve_main(cfg, run) or 0
    names = list(STAGES) if args.command == "run" else [args.command]
    log.info("%s", plan_line(names, cfg, run, args.force))
    if needs_ray(names, cfg, run, args.force):
        from pipeline.ray_session import ray_session

        with ray_session(cfg.ray, run.dir):
            for name in names:
                run_stage(name, cfg, run, force=args.force)
                if name == "data" and len(names) > 1:
                    log_estimate(cfg, run, names[1:], args.force)
    else:
        for name in names:
            run_stage(name, cfg, run, force=args.force)
    log.info(f"outputs: {run.dir.resolve()}")
    return 0


def log_estimate(cfg, run: Run, later: list[str], force: bool) -> None:
    """After `data`: how long the later stages that will run should take here (pipeline.estimate).
    An estimate never stops a run: where it cannot be made, the log says why."""
    from pipeline.estimate import estimate_line

    memo: dict = {}
    try:
        todo = [n for n in later if force or stage_state(n, cfg, run, memo)[0] != "done"]
        line = estimate_line(cfg, run, todo, reuse=not force and "augment" not in todo)
    except Exception as err:  # noqa: BLE001 - a failed estimate must not fail the run
        log.warning(f"no time estimate: {type(err).__name__}: {err}")
        return
    if line:
        log.info("%s", line)


def plan_line(names: list[str], cfg, run: Run, force: bool) -> str:
    """What this command will do: the model, worlds and conditions, and which stages run or are done."""
    memo: dict = {}
    done = [n for n in names if not force and stage_state(n, cfg, run, memo)[0] == "done"]
    todo = [n for n in names if n not in done]
    ft = len(cfg.ft_conditions()) if "train" in todo else 0
    return (f"plan: model {cfg.model.ref}; worlds {', '.join(cfg.data.enabled()) or 'none'}; "
            f"conditions {', '.join(cfg.conditions)}; stages to run: {', '.join(todo) or 'none'}"
            + (f" (up to {ft} fine-tuning{'s' if ft != 1 else ''})" if ft else "")
            + (f"; done and current: {', '.join(done)}" if done else ""))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.verbose - args.quiet)
    try:
        return execute(args)
    except (ConfigError, UsageError) as err:
        _report(err, args.debug)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    except (RecordError, Exception) as err:  # noqa: BLE001 - the CLI's last line of defence
        _report(err, args.debug)
        return 1


def _report(err: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    text = str(err).strip() or type(err).__name__
    first, *rest = text.splitlines()
    print(f"error: {first}", file=sys.stderr)
    for line in rest:  # config errors list one offending key per line
        print(f"       {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
