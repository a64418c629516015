"""Crash consistency of `llmcf run`'s stages (issue 19, defects 1 and 2; ``llmcf.publish``).

A kill is simulated by raising a BaseException (which the CLI does not catch, like SIGKILL it skips every handler the
stage could run) at a point where the stage has already replaced part of its outputs; then the original config is run
again, and it must not trust the mixed folder."""
import json

import pandas as pd
import pytest

from llmcf import publish
from llmcf.cli import main
from llmcf.errors import RunError
from test_pipeline import tiny_preset  # noqa: F401  (module fixture: toy data, random tiny Llama, real MiniLM)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no `except Exception` in a stage sees it."""


def kill_after(monkeypatch, module, name: str, n: int, when=lambda *a, **k: True):
    """Patch ``module.name`` so that its n-th call (counting calls where ``when`` holds) runs, then 'kills'."""
    real, calls = getattr(module, name), []

    def wrapper(*a, **k):
        out = real(*a, **k)
        if when(*a, **k):
            calls.append(1)
            if len(calls) == n:
                raise Killed(f"killed after {name} #{n}")
        return out

    monkeypatch.setattr(module, name, wrapper)


def run(preset, out, *sets):
    return main(["run", "--config", str(preset), "--out", str(out), *[x for s in sets for x in ("--set", s)]])


def frames(run_dir):
    return {s: pd.read_parquet(run_dir / "data" / f"{s}.parquet") for s in ("train", "valid", "test")}


def test_defect1_killed_data_rebuild_is_not_trusted(tiny_preset, tmp_path, monkeypatch, capsys):  # noqa: F811
    import llmcf.data.build as build

    out = tmp_path / "run"
    assert run(tiny_preset, out) == 0
    first = frames(out)
    capsys.readouterr()
    # rerun with another split; "SIGKILL" right after data/train.parquet was replaced
    kill_after(monkeypatch, build, "write_table", 1, when=lambda t, p: p.name == "train.parquet")
    with pytest.raises(Killed):
        run(tiny_preset, out, "data.split_ratio=[0.5,0.25,0.25]")
    monkeypatch.undo()
    assert not frames(out)["train"].equals(first["train"])  # the mixed state of the defect: new train, old others
    assert json.loads((out / "stages" / "data.json").read_text())["state"] == "running"
    with pytest.raises(RunError, match="did not finish.*llmcf data build"):
        publish.verify(out, "data")

    assert run(tiny_preset, out) == 0  # the original config again
    printed = capsys.readouterr().out
    assert "[data] unchanged since" not in printed and "[data] not trusted" in printed
    again = frames(out)
    for s in first:
        pd.testing.assert_frame_equal(again[s], first[s])
    assert publish.problem(out, "data") is None and publish.problem(out, "retrieve") is None


def test_defect2_killed_cot_rerun_is_not_trusted(tiny_preset, tmp_path, monkeypatch, capsys):  # noqa: F811
    import llmcf.llm.cot.generate as gen

    out = tmp_path / "run"
    assert run(tiny_preset, out) == 0
    selected = pd.read_parquet(out / "cot" / "selected.parquet")
    assert len(selected) > 0
    capsys.readouterr()
    # rerun with another cot.count: the old generation (with selected.parquet) is archived, then "SIGKILL"
    kill_after(monkeypatch, gen, "write_parquet", 1)
    with pytest.raises(Killed):
        run(tiny_preset, out, "cot.count=4")
    monkeypatch.undo()
    assert not (out / "cot" / "selected.parquet").exists()  # the state of the defect
    with pytest.raises(RunError, match="cot_generate.*did not finish"):
        publish.verify(out, "cot_generate")
    with pytest.raises(RunError, match=r"cot/\w+.parquet: missing.*llmcf cot score"):
        publish.verify(out, "cot_score")

    assert run(tiny_preset, out) == 0
    printed = capsys.readouterr().out
    assert "[cot_generate] not trusted" in printed and "[cot_score] not trusted" in printed
    pd.testing.assert_frame_equal(pd.read_parquet(out / "cot" / "selected.parquet"), selected)
    for stage in publish.STAGE_OUTPUTS:
        assert publish.problem(out, stage) is None, stage


def test_crash_before_the_record_and_hand_edits_are_caught_by_readers(tiny_preset, tmp_path, monkeypatch,  # noqa: F811
                                                                      capsys):
    out = tmp_path / "run"
    assert run(tiny_preset, out) == 0
    capsys.readouterr()

    def die(stage):
        if stage == "retrieve":
            raise Killed("killed before the record")

    # every retrieval file fully written, the record not yet: still untrusted, and `llmcf train --ict` says what to run
    monkeypatch.setitem(publish.HOOKS, "before_record", die)
    with pytest.raises(Killed):
        main(["retrieve", "--run", str(out)])
    monkeypatch.delitem(publish.HOOKS, "before_record")
    assert main(["train", "--run", str(out), "--model", "DIN", "--ict", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "retrieve stage did not finish" in err and f"llmcf retrieve --run {out}" in err
    assert main(["retrieve", "--run", str(out)]) == 0 and publish.problem(out, "retrieve") is None

    # an upstream file changed after retrieval read it: retrieval (and what reads it) is no longer trusted
    emb = out / "embed" / "item_ids.json"
    emb.write_text(emb.read_text().replace("[", "[ ", 1))
    assert "changed since the embed stage wrote it" in publish.problem(out, "embed")
    assert "embed stage's files are not the ones the retrieve stage read" in publish.problem(out, "retrieve")
    with pytest.raises(RunError, match="llmcf embed --run"):
        publish.verify(out, "embed")
    assert run(tiny_preset, out) == 0
    printed = capsys.readouterr().out
    assert "[embed] not trusted" in printed and "[retrieve] not trusted" in printed
    assert "[cot_score] unchanged" in printed
    assert publish.problem(out, "retrieve") is None


KILL_AFTER_TRAIN_PARQUET = """
import os, signal, sys
import llmcf.data.build as build
real = build.write_table
def write_then_die(table, path):
    real(table, path)
    if path.name == "train.parquet":
        os.kill(os.getpid(), signal.SIGKILL)
build.write_table = write_then_die
from llmcf.cli import main
main(sys.argv[1:])
"""


def test_real_sigkill_of_a_data_rebuild(tmp_path):
    """A real SIGKILL (the process kills itself right after data/train.parquet was replaced) of `llmcf data build`
    with a changed split: the folder is refused by train, and rebuilding the original config restores it exactly."""
    import os
    import subprocess
    import sys

    from test_cli import _write_atomic

    _write_atomic(tmp_path / "toy", n_users=24, n_items=20, per_user=8)
    out, args = tmp_path / "run", ["data", "build", "--dataset", str(tmp_path / "toy")]
    assert main([*args, "--out", str(out)]) == 0
    first = frames(out)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, "-c", KILL_AFTER_TRAIN_PARQUET, *args, "--out", str(out), "--set",
                        "data.split_ratio=[0.5,0.25,0.25]"], env=env, capture_output=True, text=True)
    assert p.returncode == -9, p.stderr[-2000:]
    assert not frames(out)["train"].equals(first["train"])
    assert main(["train", "--run", str(out), "--model", "DIN", "--quiet"]) == 1
    with pytest.raises(RunError, match="did not finish"):
        publish.verify(out, "data")
    assert main([*args, "--out", str(out)]) == 0
    assert publish.problem(out, "data") is None
    for s, df in frames(out).items():
        pd.testing.assert_frame_equal(df, first[s])
