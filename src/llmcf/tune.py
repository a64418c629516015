"""`llmcf tune`: hyper-parameter search (Optuna TPE, seeded) of one backbone, or of LLM-CF, on validation AUC only.

    llmcf tune --run R --model DIN [--ict [--variant V] | --baseline textemb|kd|kar] [--trials N]

The search space is the ``tune`` section of the config (``TuneConfig``): ``space`` (every backbone) ∪
``models[<backbone>]`` ∪, with ``--ict``, ``ict`` (ICT size, depth, learning rate, reconstruction weight, K) or, with
``--baseline NAME``, ``baselines[NAME]`` (the baseline's feature sizes, dropout, KD weight/temperature; its LLM
texts or teacher scores are made once, by the first trial, and read by every later one). Each
trial trains ``tune.seeds`` seeds (default one: ``train.seed``) through the training stage
(``llmcf.train.stage.run_train``) with the trial's values set on the run's config, under the same early-stopping rule
as ``llmcf train``; its objective is the best validation AUC (the mean over the seeds). Test rows are scored by the
training stage as always but never read here.

Files, in ``run_dir/tune/<tag>/`` (tag as in models/: DIN, DIN+llmcf, DIN+kar, ...):
    study.db             the Optuna study (SQLite): resumable — rerun the same command after Ctrl-C or a kill and
                         it runs only the missing trials; an interrupted trial is run again with the same values
    trials/<n>/          trial n's training outputs (models/<tag>/seed_<s>/...)
    best.yaml            the run's config with the best trial's values: ``llmcf train --run R --config best.yaml``
    summary.json         best trial, every finished trial, parameter importances (read by ``llmcf report``)
A trial whose values change the retrieval (``retrieval.k`` etc.) reads in-context ids from
``run_dir/tune/_retrieval/<hash>/``, a view of the run (links to data/, embed/, cot/) with its own retrieval stage.
Give the backbone and LLM-CF (or a baseline) the same ``--trials`` when comparing them: every comparison is
tuned-vs-tuned.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmcf.config import Config, ConfigError, config_from_dict, save_config
from llmcf.fingerprint import digest, without_added_defaults
from llmcf.errors import RunError
from llmcf.io import atomic_write_json

NOT_TUNABLE = ("data.", "tune.", "llm.", "recgen.", "cot.", "embed.", "serve.", "seq.")
"""Config sections a trial may not change (they belong to other stages or to the study itself)."""
BASELINE_TUNABLE = ("baseline.dim", "baseline.hidden", "baseline.dropout", "baseline.kd_weight",
                    "baseline.kd_temperature", "baseline.kar_shared_experts", "baseline.kar_dedicated_experts")
"""The ``baseline.*`` fields a trial may change: the trained part's sizes and loss weights. The others choose the
method or change its LLM stage (which rows the teacher scores, which users get a KAR text), not a trial's model."""


# ---- search space ---------------------------------------------------------------------------------------------
def search_space(cfg: Config, model_name: str, ict: bool) -> dict[str, dict]:
    """The merged, validated space of one study: {dotted field: distribution spec}."""
    t = cfg.tune
    merged: dict[str, Any] = {}
    baseline = cfg.baseline.name
    if baseline and ict:
        raise ConfigError(f"tune: baseline '{baseline}' and the ICT (--ict) are separate methods: tune one at a time")
    if baseline and cfg.baseline.residual:
        raise ConfigError("tune: baseline.residual trains on a fixed, already trained base model; tune the base "
                          "model (llmcf tune --model ...), train it, then train the residual baseline on it")
    if baseline and baseline not in t.baselines:
        raise ConfigError(f"tune: no search space for baseline '{baseline}' in tune.baselines "
                          f"(has: {', '.join(sorted(t.baselines)) or 'none'})")
    for where, part in (("tune.space", t.space), (f"tune.models.{model_name}", t.models.get(model_name) or {}),
                        *((("tune.ict", t.ict),) if ict else ()),
                        *(((f"tune.baselines.{baseline}", t.baselines[baseline]),) if baseline else ())):
        if not isinstance(part, dict):
            raise ConfigError(f"{where}: expected a mapping of config field -> distribution, got {part!r}")
        for key, spec in part.items():
            if spec is None:
                merged.pop(key, None)
                continue
            _check_spec(cfg, f"{where}.{key}", key, spec)
            merged[key] = spec
    if ict and cfg.ict.variant != "full" and "ict.recon_weight" in merged:
        # only the full variant has the reconstruction loss: a trial varying its weight would retrain the same model
        merged.pop("ict.recon_weight")
    if not merged:
        raise ConfigError(f"tune: the search space of {model_name} is empty")
    return merged


def _check_spec(cfg: Config, where: str, key: str, spec: Any) -> None:
    if key.startswith(NOT_TUNABLE) or (key.startswith("baseline.") and key not in BASELINE_TUNABLE):
        raise ConfigError(f"{where}: '{key}' cannot be tuned (only model.*, train.*, ict.*, retrieval.* and, with "
                          f"--baseline, {', '.join(BASELINE_TUNABLE)})")
    if key.startswith("baseline.") and not cfg.baseline.name:
        raise ConfigError(f"{where}: '{key}' is a baseline's field; it is searched only with --baseline "
                          f"(put it under tune.baselines.<name>)")
    try:
        apply_params(cfg, {key: _example(spec)})
    except (ConfigError, KeyError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from e
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected {{low, high[, log, step]}} or {{choices: [...]}}, got {spec!r}")
    if "choices" in spec:
        if not isinstance(spec["choices"], list) or not spec["choices"] or set(spec) - {"choices"}:
            raise ConfigError(f"{where}: 'choices' must be a non-empty list (and alone)")
        return
    extra = set(spec) - {"low", "high", "log", "step"}
    if extra or "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: expected {{low, high[, log, step]}} or {{choices: [...]}}, got {spec!r}")
    lo, hi = spec["low"], spec["high"]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)) or lo > hi:
        raise ConfigError(f"{where}: low and high must be numbers with low <= high, got {lo!r}, {hi!r}")
    if spec.get("log") and lo <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {lo!r}")


def _example(spec: Any) -> Any:
    if isinstance(spec, dict) and spec.get("choices"):
        return spec["choices"][0]
    if isinstance(spec, dict) and "low" in spec:
        return spec["low"]
    return spec


def suggest(trial, key: str, spec: dict) -> Any:
    """One value of ``spec`` from an Optuna trial. Choices are suggested as their JSON text, so lists (e.g. MLP
    sizes) work; integer bounds give integers."""
    if "choices" in spec:
        texts = [json.dumps(c) for c in spec["choices"]]
        return json.loads(trial.suggest_categorical(key, texts))
    lo, hi = spec["low"], spec["high"]
    if isinstance(lo, int) and isinstance(hi, int) and not spec.get("log") and not isinstance(spec.get("step"), float):
        return trial.suggest_int(key, lo, hi, step=int(spec.get("step") or 1))
    return trial.suggest_float(key, float(lo), float(hi), log=bool(spec.get("log")),
                               step=None if spec.get("log") or spec.get("step") is None else float(spec["step"]))


_MISSING = object()


def _constructor_default(model_name: str, arg: str) -> Any:
    """The default of backbone ``model_name``'s constructor argument ``arg`` (``_MISSING`` if none)."""
    import inspect

    from llmcf.models.ranking import BACKBONES

    if model_name not in BACKBONES:
        return _MISSING
    p = inspect.signature(BACKBONES.get(model_name).__init__).parameters.get(arg)
    if p is None or p.default is inspect.Parameter.empty:
        return _MISSING
    return list(p.default) if isinstance(p.default, tuple) else p.default


def config_value(cfg: Config, key: str, model_name: str | None = None) -> Any:
    """The value of dotted field ``key`` in ``cfg``; a backbone argument the config leaves unset
    (``model.params.<Backbone>.<arg>``, or ``model.params.<arg>`` for ``model_name``) is the constructor's default
    the model is built with; ``_MISSING`` when there is none."""
    parts = key.split(".")
    if parts[:2] == ["model", "params"] and len(parts) in (3, 4):
        owner = parts[2] if len(parts) == 4 else model_name
        params = cfg.model.params_for(owner) if owner else cfg.model.params
        if parts[-1] in params:
            return params[parts[-1]]
        return _constructor_default(owner, parts[-1]) if owner else _MISSING
    node: Any = cfg.to_dict()
    for p in parts:
        if not isinstance(node, dict) or p not in node:
            return _MISSING
        node = node[p]
    return node


def config_params(cfg: Config, space: dict[str, dict], model_name: str | None = None) -> dict[str, Any]:
    """The config's own values of the searched fields (backbone arguments it leaves unset: the constructor's
    defaults), as Optuna params (choices as their JSON text), for each one its distribution can hold."""
    out: dict[str, Any] = {}
    for key, spec in space.items():
        v = config_value(cfg, key, model_name)
        if v is _MISSING or v is None:
            continue
        if "choices" in spec:
            text = json.dumps(v)
            if text in [json.dumps(c) for c in spec["choices"]]:
                out[key] = text
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not spec["low"] <= v <= spec["high"]:
            continue
        lo, hi = spec["low"], spec["high"]
        if isinstance(lo, int) and isinstance(hi, int) and not spec.get("log") \
                and not isinstance(spec.get("step"), float):
            step = int(spec.get("step") or 1)
            if float(v).is_integer() and (int(v) - lo) % step == 0:
                out[key] = int(v)
        else:
            step = None if spec.get("log") else spec.get("step")
            if step is None or abs((v - lo) / step - round((v - lo) / step)) < 1e-9:  # on the grid a step makes
                out[key] = float(v)
    return out


def decode(space: dict[str, dict], params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored params -> config values (JSON text of choices decoded)."""
    return {k: json.loads(v) if "choices" in space.get(k, {}) and isinstance(v, str) else v for k, v in params.items()}


def apply_params(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted fields set (typed and checked like the YAML config)."""
    tree = copy.deepcopy(cfg.to_dict())
    for key, val in values.items():
        parts = key.split(".")
        if parts[:2] == ["model", "params"] and len(parts) in (3, 4):
            # backbone constructor arguments are free-form: model.params.<arg> (every backbone) or
            # model.params.<Backbone>.<arg> (that backbone only)
            node = tree["model"]["params"]
            if len(parts) == 4:
                node = node.setdefault(parts[2], {})
                if not isinstance(node, dict):
                    raise ConfigError(f"'{key}': model.params.{parts[2]} is not a mapping")
            node[parts[-1]] = val
            continue
        node = tree
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"'{key}': no config section '{p}'")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"'{key}': unknown config field")
        node[parts[-1]] = val
    return config_from_dict(tree)


# ---- one trial ------------------------------------------------------------------------------------------------
def study_tag(model_name: str, cfg: Config) -> str:
    from llmcf.train.stage import variant_tag

    return variant_tag(model_name, cfg)


def retrieval_dir(run_dir: Path, cfg: Config) -> Path:
    """The run itself when its retrieval config equals ``cfg.retrieval``, else a view of it under
    tune/_retrieval/<hash>/ whose retrieval stage is run once (and kept) with ``cfg.retrieval``."""
    meta = run_dir / "retrieval" / "meta.json"
    rc = asdict(cfg.retrieval)
    if meta.exists() and _same_retrieval(json.loads(meta.read_text()).get("config"), rc):
        return run_dir
    view = run_dir / "tune" / "_retrieval" / digest(without_added_defaults("retrieval", rc))
    view.mkdir(parents=True, exist_ok=True)
    for name in ("data", "embed", "cot"):
        link = view / name
        if not (run_dir / name).exists():
            raise RunError(f"{run_dir / name}: missing; tuning the retrieval needs the run's {name}/ stage outputs")
        if not link.exists():
            os.symlink(os.path.relpath(run_dir / name, view), link, target_is_directory=True)
    if cfg.ict.warm_start and (run_dir / "models").exists() and not (view / "models").exists():
        # a warm-started trial reads the base model's weights from <view>/models/<backbone>/ (read only)
        os.symlink(os.path.relpath(run_dir / "models", view), view / "models", target_is_directory=True)
    done = view / "retrieval" / "meta.json"
    if not done.exists() or not _same_retrieval(json.loads(done.read_text()).get("config"), rc):
        from llmcf.retrieval.stage import run_retrieve

        run_retrieve(view, cfg, progress=False)
    return view


def _same_retrieval(saved: dict | None, rc: dict) -> bool:
    return saved is not None and without_added_defaults("retrieval", saved) == without_added_defaults("retrieval", rc)


def warm_start_study(run_dir: Path, cfg: Config, model_name: str, space: dict) -> tuple[Config, dict]:
    """With ``ict.warm_start`` every trial starts its backbone from the trained base model of the run
    (``models/<backbone>/seed_<train.seed>``), so the trials' backbone is that model's: its ``model`` section is
    taken from the config it was trained with (e.g. a tuned backbone's best.yaml) and the ``model.*`` fields leave
    the search space; training (lr, weight decay, ...), ICT and retrieval fields are still searched."""
    from llmcf.config import load_config
    from llmcf.rundir import RunDir

    if cfg.ict.fusion != "residual" or "ict.fusion" in space:
        raise ConfigError("tune: ict.warm_start needs ict.fusion: residual in every trial (set it, and leave "
                          "ict.fusion out of tune.ict)")
    seed_dir = RunDir(run_dir).seed(model_name, cfg.train.seed)
    if not (seed_dir / "model.safetensors").exists() or not (seed_dir / "config.yaml").exists():
        raise RunError(f"{seed_dir}: no trained base model; ict.warm_start starts every trial from it, so train it "
                       f"first: llmcf train --run {run_dir} --model {model_name}")
    fixed = copy.deepcopy(cfg)
    fixed.model = load_config(seed_dir / "config.yaml").model
    dropped = sorted(k for k in space if k.startswith("model."))
    kept = {k: v for k, v in space.items() if not k.startswith("model.")}
    if not kept:
        raise ConfigError(f"tune: with ict.warm_start the backbone fields ({', '.join(dropped)}) are fixed to the "
                          f"trained base model's, which leaves nothing to search; add train.*/ict.*/retrieval.* "
                          f"fields to tune.ict")
    if dropped:
        print(f"[tune] ict.warm_start: backbone fixed to {seed_dir / 'config.yaml'}; not searched: "
              f"{', '.join(dropped)}")
    return fixed, kept


def train_trial(run_dir: Path, trial_dir: Path, cfg: Config, model_name: str, cache: dict) -> float:
    """Train one trial's config through the training stage; returns its best validation AUC."""
    from llmcf.train.stage import RunData, run_train

    src = retrieval_dir(run_dir, cfg) if cfg.ict.enabled else run_dir
    key = (str(src), cfg.data.history_len)
    if key not in cache:
        cache[key] = RunData(src, cfg)
    summary = run_train(trial_dir, cfg, model_name, run=cache[key], progress=False)
    return float(summary["valid"]["auc"]["mean"])


# ---- the study ------------------------------------------------------------------------------------------------
def _finished(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))]


def _recover_interrupted(study) -> int:
    """Mark trials left RUNNING by a kill as failed and queue every interrupted trial's values again (once; the
    numbers already queued are kept in the study's ``requeued`` attribute, finished trials being read-only)."""
    from optuna.trial import TrialState

    storage, queued = study._storage, list(study.user_attrs.get("requeued", []))
    n = 0
    for t in study.get_trials(deepcopy=False):
        stale = t.state == TrialState.RUNNING
        if stale:
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if (stale or (t.state == TrialState.FAIL and t.user_attrs.get("interrupted"))) and t.number not in queued:
            queued.append(t.number)
            if t.params:
                study.enqueue_trial(t.params, skip_if_exists=False)
            n += 1
    study.set_user_attr("requeued", queued)
    return n


def run_tune(run_dir: Path, cfg: Config, model_name: str, trials: int | None = None,
             trainer=train_trial) -> dict:
    """Run (or resume) the study of ``model_name`` (``cfg.ict.enabled``: LLM-CF) until it has ``trials`` finished
    trials; writes best.yaml and summary.json and returns the summary. ``trainer(run_dir, trial_dir, cfg, name,
    cache) -> valid AUC`` trains one trial (the training stage; replaceable in tests)."""
    try:
        import optuna
    except ImportError as e:
        raise RunError("llmcf tune needs Optuna: pip install 'llmcf[tune]' (or `make install`)") from e
    from llmcf.models.ranking import BACKBONES
    from llmcf.pipeline import check_names

    check_names([model_name], BACKBONES, "--model")
    run_dir = Path(run_dir)
    if not (run_dir / "data" / "vocab.json").exists():
        raise RunError(f"{run_dir / 'data'}: no samples here; run `llmcf data build --out {run_dir}` first")
    n_trials = int(trials if trials is not None else cfg.tune.trials)
    if n_trials < 1:
        raise ConfigError(f"tune: --trials must be >= 1, got {n_trials}")
    ict = bool(cfg.ict.enabled)
    space = search_space(cfg, model_name, ict)
    if ict and cfg.ict.warm_start:
        cfg, space = warm_start_study(run_dir, cfg, model_name, space)
    seeds = int(cfg.tune.seeds)
    if seeds < 1:
        raise ConfigError(f"tune.seeds: seeds per trial must be >= 1, got {seeds}")
    base = copy.deepcopy(cfg)
    base.train.seeds = seeds
    base.models = [model_name]
    tag = study_tag(model_name, base)
    out = run_dir / "tune" / tag
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.create_study(study_name=tag, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=cfg.tune.seed))
    prev_space = study.user_attrs.get("space")
    if prev_space is not None and prev_space != space and "ict.recon_weight" in prev_space \
            and {k: v for k, v in prev_space.items() if k != "ict.recon_weight"} == space:
        space = prev_space  # a w/o CoT study started while the inert weight was still searched: resume it as it was
    if prev_space is not None and prev_space != space:
        raise ConfigError(f"{out / 'study.db'}: this study was started with another search space; delete "
                          f"{out} to start over, or restore the tune section it used")
    prev_seeds = study.user_attrs.get("seeds_per_trial", 1 if prev_space is not None else None)
    if prev_seeds is not None and prev_seeds != seeds:
        raise ConfigError(f"{out / 'study.db'}: this study's trials average {prev_seeds} seed(s) each, not "
                          f"tune.seeds={seeds}; set it back, or delete {out} to start over")
    if prev_space is None and not study.trials and cfg.tune.start_at_config:
        start = config_params(base, space, model_name)
        if start:  # trial 0 = the untuned configuration, so the study's best is never below it on validation
            study.enqueue_trial(start)
            study.set_user_attr("start_at_config", decode(space, start))
    study.set_user_attr("space", space)
    study.set_user_attr("seeds_per_trial", seeds)
    requeued = _recover_interrupted(study)
    done = len(_finished(study))
    # the sampler's random stream restarts on resume: reseed it by progress so a resumed study stays reproducible
    study.sampler = optuna.samplers.TPESampler(seed=cfg.tune.seed + done,
                                               n_startup_trials=cfg.tune.startup_trials)
    print(f"[tune] {tag}: {done}/{n_trials} trials finished" + (f", {requeued} interrupted one(s) queued again"
                                                                 if requeued else "")
          + (f", {seeds} seeds per trial" if seeds > 1 else "") + f" -> {out}")
    cache: dict = {}

    def objective(trial) -> float:
        values = {k: suggest(trial, k, spec) for k, spec in space.items()}
        tcfg = apply_params(base, values)
        try:
            auc = trainer(run_dir, out / "trials" / str(trial.number), tcfg, model_name, cache)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        print(f"[tune] {tag} trial {trial.number}: valid AUC {auc:.4f}  {values}", flush=True)
        return auc

    while len(_finished(study)) < n_trials:
        study.optimize(objective, n_trials=n_trials - len(_finished(study)), catch=(RuntimeError, ValueError))
    return write_outputs(study, base, space, out, tag, model_name, final_seeds=cfg.train.seeds)


def write_outputs(study, base: Config, space: dict, out: Path, tag: str, model_name: str,
                  final_seeds: int) -> dict:
    """best.yaml (the best trial's values on the run's config, ``train.seeds`` = ``final_seeds``: the seeds
    ``llmcf train --config best.yaml`` trains) and summary.json."""
    import optuna
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise RunError(f"{out}: no trial finished (see the errors above)")
    best = max(complete, key=lambda t: t.value)
    best_values = decode(space, best.params)
    best_cfg = apply_params(base, best_values)
    best_cfg.train.seeds = int(final_seeds)
    save_config(best_cfg, out / "best.yaml")
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=base.tune.seed)
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
        importance = {k: float(v) for k, v in imp.items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few trials, or no parameter varied
        importance = {}
    seeds = int(base.train.seeds)
    objective = "valid AUC" if seeds == 1 else f"valid AUC, mean of {seeds} seeds"
    summary = {"tag": tag, "model": model_name, "ict": bool(base.ict.enabled), "baseline": base.baseline.name,
               "objective": objective,
               "seeds_per_trial": seeds, "start_at_config": study.user_attrs.get("start_at_config"),
               "sampler": f"TPE seed {base.tune.seed}, {base.tune.startup_trials} random start-up trials",
               "trials": len(complete), "space": space,
               "best": {"number": best.number, "valid_auc": best.value, "params": best_values},
               "importance": importance, "best_config": "best.yaml",
               "all": [{"number": t.number, "valid_auc": t.value, "params": decode(space, t.params)}
                       for t in complete]}
    atomic_write_json(out / "summary.json", summary)
    print(f"[tune] {tag}: best trial {best.number} valid AUC {best.value:.4f} {best_values}\n"
          f"  config: {out / 'best.yaml'}  (llmcf train --run {out.parent.parent} --config {out / 'best.yaml'})")
    return summary


# ---- report ---------------------------------------------------------------------------------------------------
def load_tune_summaries(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(run_dir) / "tune").glob("*/summary.json"))]


def tune_markdown(summaries: list[dict]) -> str:
    """Best trial of every study and the trial-budget line (readable without Optuna installed)."""
    if not summaries:
        return ""
    rows = ["| study | trials | best trial | best valid AUC | best values | most important |", "|---|---|---|---|---|---|"]
    for s in summaries:
        vals = ", ".join(f"{k}={_short(v)}" for k, v in s["best"]["params"].items())
        imp = ", ".join(f"{k} {v:.2f}" for k, v in list(s["importance"].items())[:3]) or "–"
        rows.append(f"| {s['tag']} | {s['trials']} | {s['best']['number']} | {s['best']['valid_auc']:.4f} | {vals} | "
                    f"{imp} |")
    budgets = sorted({(s["trials"], s.get("seeds_per_trial", 1)) for s in summaries})
    note = ("equal trial budgets" if len(budgets) == 1 else
            f"UNEQUAL trial budgets ({', '.join(f'{t} trials x {n} seed(s)' for t, n in budgets)}): tuned "
            "comparisons between these are not fair")
    seeds = " / ".join("one seed" if n == 1 else f"mean of {n} seeds" for n in sorted({n for _, n in budgets}))
    return "\n".join(rows) + f"\n\nObjective: validation AUC only ({seeds} per trial); {note}."


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else json.dumps(v)


def tune_plots(summaries: list[dict], out: Path) -> list[str]:
    """One bar chart of parameter importances per study (studies without importances are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmcf.io import atomic_path

    files = []
    for s in summaries:
        imp = s.get("importance") or {}
        if not imp:
            continue
        fig, ax = plt.subplots(figsize=(5, 0.4 * len(imp) + 1.2))
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="#55A868")
        ax.set_xlabel("importance (share of valid-AUC variance, fANOVA)")
        ax.set_title(f"tune {s['tag']}: {s['trials']} trials", fontsize=9)
        fig.tight_layout()
        name = f"tune-{s['tag'].replace('+', '_')}.png"
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        files.append(name)
    return files
