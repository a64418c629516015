import pytest

from llmcf.cli import build_parser, main


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for stage in ("data", "recgen", "cot", "embed", "retrieve", "train", "report", "run", "serve"):
        assert stage in out


def test_train_on_a_missing_run_dir_is_a_clear_error(tmp_path, capsys):
    rc = main(["train", "--run", str(tmp_path / "nope"), "--model", "DIN"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "no samples here" in err and "llmcf data build" in err


def test_bad_override_is_reported_without_traceback(tmp_path, capsys):
    rc = main(["train", "--run", str(tmp_path), "--set", "train.seeds=many"])
    assert rc == 1
    assert "train.seeds: expected an integer" in capsys.readouterr().err


def test_run_requires_a_config(capsys):
    assert main(["run"]) == 1
    assert "--config" in capsys.readouterr().err


def test_stage_groups_without_subcommand_show_help(capsys):
    with pytest.raises(SystemExit):
        main(["cot"])
    assert "generate" in capsys.readouterr().out


def test_parser_accepts_ict_variants():
    args = build_parser().parse_args(["train", "--run", "r", "--model", "DIN", "--ict", "--variant", "no_cot"])
    assert args.ict and args.variant == "no_cot"
