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


def _write_atomic(folder, n_users=30, n_items=25, per_user=8, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        for t in range(per_user):
            lines.append(f"u{u}\ti{(start + t) % n_items}\t{rng.choice([2, 4, 5])}\t{t}")
    (folder / f"{folder.name}.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\ttitle:token_seq"] + [f"i{j}\tthing {j}" for j in range(n_items)]
    (folder / f"{folder.name}.item").write_text("\n".join(items) + "\n")


def test_train_task_sequential_through_the_cli(tmp_path, capsys):
    import json

    _write_atomic(tmp_path / "toy")
    run = tmp_path / "run"
    assert main(["data", "build", "--dataset", str(tmp_path / "toy"), "--out", str(run),
                 "--set", "data.label=rating", "--set", "data.history_len=5"]) == 0
    rc = main(["train", "--run", str(run), "--task", "sequential", "--model", "GRU4Rec", "--quiet",
               "--set", "seq.max_epochs=1", "--set", "seq.hidden=8", "--set", "seq.num_negatives=5",
               "--set", "seq.history_len=5"])
    assert rc == 0
    summary = json.loads((run / "models" / "seq-GRU4Rec" / "summary.json").read_text())
    assert summary["task"] == "sequential" and summary["protocol"]["rows"]["test"] == 30
    assert "Recall@10" in capsys.readouterr().out


def test_train_task_sequential_rejects_a_ranking_backbone(tmp_path, capsys):
    _write_atomic(tmp_path / "toy")
    run = tmp_path / "run"
    assert main(["data", "build", "--dataset", str(tmp_path / "toy"), "--out", str(run)]) == 0
    assert main(["train", "--run", str(run), "--task", "sequential", "--model", "DIN"]) == 1
    assert "not a sequential backbone" in capsys.readouterr().err


def test_run_rejects_unknown_model_names_before_any_stage(tmp_path, capsys):
    rc = main(["run", "--config", "demo", "--out", str(tmp_path / "r"), "--set", "models=[DIN, NotAModel]"])
    assert rc == 1
    assert "NotAModel" in capsys.readouterr().err
    assert not (tmp_path / "r" / "stages").exists()
