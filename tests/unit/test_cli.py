import subprocess
import sys

from pipeline.cli import main


def test_usage_and_config_errors_exit_2_with_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nbogus: 1\n")
    assert main(["data", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bogus: unknown key" in err and "Traceback" not in err
    assert main(["data", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_every_command_has_help():
    for command in ["data", "augment", "train", "evaluate", "report", "run", "serve"]:
        out = subprocess.run([sys.executable, "-m", "pipeline", command, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "--set KEY=VALUE" in out.stdout and "CONFIG" in out.stdout


def test_config_is_saved_before_stages_run(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: r\noutput_dir: {tmp_path}\nconditions: [base]\n")
    main(["report", str(cfg), "--set", "seed=3"])
    assert "seed: 3" in (tmp_path / "r" / "config.yaml").read_text()


def test_the_plan_line_names_what_will_run_and_what_is_done(tmp_path):
    from pipeline.cli import plan_line
    from pipeline.config import load_config
    from pipeline.runs import Run
    from pipeline.stages import STAGES

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"name: p\noutput_dir: {tmp_path}\nmodel: {{ref: tiny-random}}\nconditions: [base, icl, ft, ft+oracle]\n"
                        "data: {reversals: {size: demo, n_facts: 4, articles_per_fact: 1}}\n")
    cfg = load_config(str(cfg_file))
    run = Run.of(cfg)
    assert plan_line(list(STAGES), cfg, run, force=False) == (
        "plan: model tiny-random; worlds reversals; conditions base, icl, ft, ft+oracle; "
        "stages to run: data, augment, train, evaluate, report (up to 2 fine-tunings)")
    assert main(["data", str(cfg_file)]) == 0
    assert plan_line(list(STAGES), cfg, run, force=False).endswith(
        "stages to run: augment, train, evaluate, report (up to 2 fine-tunings); done and current: data")
    assert plan_line(["data"], cfg, run, force=True).endswith("stages to run: data")
