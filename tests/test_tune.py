"""`llmcf tune`: search space checks, resume after an interruption, and a real tiny study through the CLI."""
from __future__ import annotations

import json

import pytest
import yaml

from llmcf.cli import main
from llmcf.config import ConfigError, load_config
from llmcf.tune import apply_params, run_tune, search_space, tune_markdown
from test_cli import _write_atomic

optuna = pytest.importorskip("optuna")  # an extra (llmcf[tune]); `make install` installs it


@pytest.fixture
def run_dir(tmp_path):
    _write_atomic(tmp_path / "toy", n_users=20, n_items=15, per_user=8)
    run = tmp_path / "run"
    assert main(["data", "build", "--dataset", str(tmp_path / "toy"), "--out", str(run),
                 "--set", "data.label=rating", "--set", "data.history_len=5"]) == 0
    return run


def test_search_space_merges_sections_and_rejects_bad_specs():
    cfg = load_config(None, ["tune.models={DIN: {model.params.attention_mlp: {choices: [[8, 4]]}, "
                             "model.dropout: null}}"])
    space = search_space(cfg, "DIN", ict=True)
    assert "model.params.attention_mlp" in space and "model.dropout" not in space
    assert "retrieval.k" in space and "ict.dim" in space and "train.lr" in space
    assert "retrieval.k" not in search_space(cfg, "DIN", ict=False)
    assert "ict.recon_weight" in space  # the full variant has the reconstruction loss ...
    nocot = load_config(None, ["ict.variant=no_cot"])
    assert "ict.recon_weight" not in search_space(nocot, "DIN", ict=True)  # ... w/o CoT has none to weigh
    assert "ict.dim" in search_space(nocot, "DIN", ict=True)
    for bad, msg in (({"train.nope": {"low": 1, "high": 2}}, "unknown config field"),
                     ({"data.history_len": {"low": 1, "high": 2}}, "cannot be tuned"),
                     ({"train.lr": {"low": 0.0, "high": 1.0, "log": True}}, "log scale"),
                     ({"train.lr": {"low": 1.0}}, "expected"),
                     ({"train.batch_size": {"choices": ["x"]}}, "integer")):
        cfg = load_config(None)
        cfg.tune.space = bad
        with pytest.raises(ConfigError, match=msg):
            search_space(cfg, "DIN", ict=False)
    assert apply_params(load_config(None), {"model.params.cross_layers": 2}).model.params == {"cross_layers": 2}
    keyed = apply_params(load_config(None), {"model.params.DCN.cross_layers": 2, "model.params.DCN.init_std": 0.1})
    assert keyed.model.params == {"DCN": {"cross_layers": 2, "init_std": 0.1}}
    assert keyed.model.params_for("DCN")["cross_layers"] == 2 and keyed.model.params_for("DIN") == {}
    assert "model.params.DCN.cross_layers" in search_space(load_config(None), "DCN", ict=False)


def test_interrupted_study_resumes_without_repeating_finished_trials(run_dir, capsys):
    cfg = load_config(None, ["tune.startup_trials=2", "tune.space={train.lr: {low: 0.001, high: 0.1, log: true}, "
                                                      "model.embed_dim: {choices: [4, 8, 16]}}"])
    calls = []

    def trainer(run, trial_dir, tcfg, name, cache):
        calls.append((trial_dir.name, tcfg.train.lr, tcfg.model.embed_dim))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third trial
        return 0.5 + tcfg.train.lr  # a deterministic objective of the trial's values

    with pytest.raises(KeyboardInterrupt):
        run_tune(run_dir, cfg, "DIN", trials=5, trainer=trainer)
    assert len(calls) == 3
    summary = run_tune(run_dir, cfg, "DIN", trials=5, trainer=trainer)
    # resumed: the interrupted trial ran once more with the same values, the two finished ones never again
    assert len(calls) == 3 + 1 + 2
    assert calls[3][1:] == calls[2][1:]
    done = [c[1:] for c in calls[:2]]
    assert all(c[1:] not in done for c in calls[3:])
    assert summary["trials"] == 5 and len({a["number"] for a in summary["all"]}) == 5
    best = max(summary["all"], key=lambda a: a["valid_auc"])
    assert summary["best"]["number"] == best["number"]
    # the best config is a config `llmcf train --config` takes, carrying the best values
    out = run_dir / "tune" / "DIN"
    best_cfg = load_config(out / "best.yaml")
    assert best_cfg.train.lr == pytest.approx(best["params"]["train.lr"])
    assert best_cfg.model.embed_dim == best["params"]["model.embed_dim"] and best_cfg.models == ["DIN"]
    # a third run has nothing left to do
    assert run_tune(run_dir, cfg, "DIN", trials=5, trainer=trainer)["trials"] == 5 and len(calls) == 6
    # another space on the same study is refused rather than mixed in
    cfg.tune.space = {"train.lr": {"low": 0.01, "high": 0.02}}
    with pytest.raises(ConfigError, match="another search space"):
        run_tune(run_dir, cfg, "DIN", trials=6, trainer=trainer)


def test_a_killed_trial_left_running_is_run_again(run_dir):
    cfg = load_config(None, ["tune.space={train.lr: {low: 0.001, high: 0.1}}"])
    seen = []

    def trainer(run, trial_dir, tcfg, name, cache):
        seen.append(tcfg.train.lr)
        return tcfg.train.lr

    run_tune(run_dir, cfg, "DCN", trials=1, trainer=trainer)
    # a kill -9 mid-trial leaves the trial RUNNING in the database
    study = optuna.load_study(study_name="DCN", storage=f"sqlite:///{run_dir / 'tune' / 'DCN' / 'study.db'}")
    stale = study.ask({"train.lr": optuna.distributions.FloatDistribution(0.001, 0.1)})
    summary = run_tune(run_dir, cfg, "DCN", trials=2, trainer=trainer)
    assert seen[-1] == pytest.approx(stale.params["train.lr"]) and summary["trials"] == 2


def test_real_tiny_study_through_the_cli_and_the_report(run_dir, capsys):
    space = yaml.safe_dump({"train.lr": {"low": 0.001, "high": 0.05, "log": True},
                            "model.dropout": {"low": 0.0, "high": 0.3}}, default_flow_style=True).strip()
    common = ["--set", "train.max_epochs=1", "--set", "train.batch_size=32", "--set", "model.embed_dim=4",
              "--set", "model.mlp=[8]", "--set", "tune.startup_trials=2", "--set", f"tune.space={space}",
              "--set", "tune.models={}"]
    assert main(["tune", "--run", str(run_dir), "--model", "DCN", "--trials", "3", *common]) == 0
    out = run_dir / "tune" / "DCN"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 3 and 0.0 <= summary["best"]["valid_auc"] <= 1.0
    # every trial trained for real through the training stage, one seed each
    assert len(list((out / "trials").glob("*/models/DCN/seed_0/result.json"))) == 3
    assert set(summary["importance"]) <= {"train.lr", "model.dropout"}
    capsys.readouterr()
    assert main(["train", "--run", str(run_dir), "--config", str(out / "best.yaml"), "--quiet"]) == 0
    trained = json.loads((run_dir / "models" / "DCN" / "seed_0" / "result.json").read_text())
    assert trained["valid"]["auc"] == pytest.approx(summary["best"]["valid_auc"])  # same config, same seed
    assert main(["report", "--run", str(run_dir)]) == 0
    md = (run_dir / "report" / "results.md").read_text()
    assert "## Tuning studies" in md and "| DCN | 3 |" in md and "## Slices" in md
    assert (run_dir / "models" / "DCN" / "seed_0" / "test_pred.npy").exists()


def test_tune_rejects_unknown_models(run_dir, capsys):
    assert main(["tune", "--run", str(run_dir), "--model", "NotAModel", "--trials", "1"]) == 1
    assert "NotAModel" in capsys.readouterr().err


def test_a_wo_cot_study_started_with_the_reconstruction_weight_resumes(run_dir):
    """Studies of w/o CoT begun while ict.recon_weight was still searched (it is inert there) resume with the space
    they were started with, instead of being refused as another space."""
    cfg = load_config(None, ["ict.enabled=true", "ict.variant=no_cot", "tune.startup_trials=1",
                             "tune.space={train.lr: {low: 0.001, high: 0.1, log: true}}", "tune.models={}",
                             "tune.ict={ict.dim: {choices: [8, 16]}, ict.recon_weight: {choices: [0.0, 1.0]}}"])
    seen = []

    def trainer(run, trial_dir, tcfg, name, cache):
        seen.append(tcfg.ict.recon_weight)
        return 0.5 + tcfg.train.lr

    run_tune(run_dir, cfg, "DIN", trials=1, trainer=trainer)
    (study_dir,) = (run_dir / "tune").iterdir()
    study = optuna.load_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir / 'study.db'}")
    old = {**study.user_attrs["space"], "ict.recon_weight": {"choices": [0.0, 1.0]}}
    assert "ict.recon_weight" not in study.user_attrs["space"]  # today's space leaves it out ...
    study.set_user_attr("space", old)  # ... an older study has it
    summary = run_tune(run_dir, cfg, "DIN", trials=2, trainer=trainer)
    assert summary["trials"] == 2 and "ict.recon_weight" in summary["space"]


def test_seeds_per_trial_average_real_trainings_and_stay_fixed_for_the_study(run_dir):
    """tune.seeds=2: every trial trains seeds 0 and 1 and its objective is their mean validation AUC; resuming the
    study with another number of seeds is refused; best.yaml trains the run's own train.seeds."""
    sets = ["train.max_epochs=1", "train.batch_size=32", "model.embed_dim=4", "model.mlp=[8]", "train.seeds=3",
            "tune.startup_trials=2", "tune.space={train.lr: {low: 0.001, high: 0.05, log: true}}", "tune.models={}",
            "tune.seeds=2"]
    summary = run_tune(run_dir, load_config(None, sets), "DCN", trials=2)
    out = run_dir / "tune" / "DCN"
    assert summary["seeds_per_trial"] == 2 and "mean of 2 seeds" in summary["objective"]
    for t in summary["all"]:
        seeds = [json.loads((out / "trials" / str(t["number"]) / "models" / "DCN" / f"seed_{s}" /
                             "result.json").read_text())["valid"]["auc"] for s in (0, 1)]
        assert seeds[0] != seeds[1]  # two real trainings, not one counted twice
        assert t["valid_auc"] == pytest.approx(sum(seeds) / 2)
        assert not (out / "trials" / str(t["number"]) / "models" / "DCN" / "seed_2").exists()
    assert load_config(out / "best.yaml").train.seeds == 3
    # the report flags studies whose trials average different numbers of seeds as an unfair pair
    one_seed = {**summary, "tag": "DCN+llmcf", "seeds_per_trial": 1}
    assert "UNEQUAL" in tune_markdown([summary, one_seed]) and "UNEQUAL" not in tune_markdown([summary, summary])
    with pytest.raises(ConfigError, match="average 2 seed"):
        run_tune(run_dir, load_config(None, sets[:-1] + ["tune.seeds=1"]), "DCN", trials=3)
    with pytest.raises(ConfigError, match="tune.seeds"):
        run_tune(run_dir, load_config(None, sets[:-1] + ["tune.seeds=0"]), "DCN", trials=3)


def test_a_baseline_study_searches_its_own_fields_and_only_those():
    kar = load_config(None, ["baseline.name=kar"])
    space = search_space(kar, "xDeepFM", ict=False)
    assert {"baseline.dim", "baseline.kar_shared_experts", "train.lr", "model.params.xDeepFM.cin_layers"} <= set(space)
    assert not any(k.startswith(("ict.", "retrieval.")) for k in space)
    kd = search_space(load_config(None, ["baseline.name=kd"]), "DIN", ict=False)
    assert "baseline.kd_weight" in kd and "baseline.dim" not in kd  # kd has no feature to size
    assert not any(k.startswith("baseline.") for k in search_space(load_config(None), "DIN", ict=False))
    with pytest.raises(ConfigError, match="separate methods"):
        search_space(kar, "DIN", ict=True)
    with pytest.raises(ConfigError, match="residual"):
        search_space(load_config(None, ["baseline.name=kar", "baseline.residual=true"]), "DIN", ict=False)
    # fields that change the LLM stage, or a baseline field searched without a baseline, are refused by name
    for sets, msg in ((["baseline.name=kd", "tune.baselines={kd: {baseline.kd_rows: {low: 10, high: 20}}}"],
                       "'baseline.kd_rows' cannot be tuned"),
                      (["tune.space={baseline.dim: {choices: [8, 16]}}"], "only with --baseline"),
                      (["baseline.name=kar", "tune.baselines={kd: {}}"], "no search space for baseline 'kar'")):
        with pytest.raises(ConfigError, match=msg):
            search_space(load_config(None, sets), "DIN", ict=False)


def test_a_new_study_starts_at_the_configs_own_values(run_dir):
    space = ("tune.space={train.lr: {low: 0.001, high: 0.1, log: true}, model.embed_dim: {choices: [4, 8, 16]}, "
             "model.dropout: {low: 0.2, high: 0.5}, train.patience: {low: 1, high: 5, step: 2}}")
    cfg = load_config(None, ["tune.startup_trials=2", space, "train.lr=0.004", "model.embed_dim=8",
                             "model.dropout=0.1", "train.patience=3", "tune.models={}"])
    seen = []

    def trainer(run, trial_dir, tcfg, name, cache):
        seen.append((tcfg.train.lr, tcfg.model.embed_dim, tcfg.model.dropout, tcfg.train.patience))
        return 0.5

    summary = run_tune(run_dir, cfg, "DCN", trials=2, trainer=trainer)
    lr, dim, dropout, patience = seen[0]
    # trial 0 trains the config's values; dropout 0.1 lies outside [0.2, 0.5], so it is sampled in range
    assert (lr, dim, patience) == (0.004, 8, 3) and 0.2 <= dropout <= 0.5
    assert summary["start_at_config"] == {"train.lr": 0.004, "model.embed_dim": 8, "train.patience": 3}
    assert seen[1][:2] != (0.004, 8)  # later trials are searched as before
    run_tune(run_dir, cfg, "DCN", trials=3, trainer=trainer)  # resuming adds no second config trial
    assert len(seen) == 3 and seen[2][:2] != (0.004, 8)
    off = cfg
    off.tune.start_at_config = False
    seen.clear()
    run_tune(run_dir, off, "DIN", trials=1, trainer=trainer)
    assert seen[0][:2] != (0.004, 8)
    assert run_tune(run_dir, off, "DIN", trials=1, trainer=trainer)["start_at_config"] is None


def test_the_config_trial_takes_unset_backbone_arguments_at_the_constructors_default():
    from llmcf.tune import config_params

    cfg = load_config(None)
    space = search_space(cfg, "xDeepFM", ict=False)
    # xDeepFM's CIN layers are not in the config: the model is built with the constructor's (100, 100)
    assert config_params(cfg, space, "xDeepFM")["model.params.xDeepFM.cin_layers"] == "[100, 100]"
    dcn = config_params(cfg, search_space(cfg, "DCN", ict=False), "DCN")
    assert dcn["model.params.DCN.cross_layers"] == 3
    set_ = config_params(load_config(None, ["model.params={DCN: {cross_layers: 2}}"]),
                         search_space(cfg, "DCN", ict=False), "DCN")
    assert set_["model.params.DCN.cross_layers"] == 2  # a value the config sets wins
    shared = {"model.params.cross_layers": {"low": 1, "high": 4}}
    assert config_params(cfg, shared, "DCN") == {"model.params.cross_layers": 3}
    assert config_params(cfg, shared, "DIN") == {}  # DIN has no such argument: sampled
