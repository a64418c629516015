"""The baselines (llmcf train --baseline textemb|kd|kar): module shapes and missing vectors, the KAR user-text leakage
rule, resumable KAR text shards, KD cache reuse, and a tiny end-to-end run of each (random 2-layer Llama, real
MiniLM)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from llmcf.cli import main
from llmcf.config import load_config

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


# ---------------------------------------------------------------------------- modules
def test_feature_shapes_and_missing_vectors(tiny_schema):
    from llmcf.models.baselines import AugmentedModel, KARFeature, TextEmbFeature
    from llmcf.models.ranking import BACKBONES

    rng = np.random.default_rng(0)
    D, B = 6, 5
    items = rng.normal(size=(tiny_schema.n_items, D)).astype(np.float32)
    items[:2] = 0  # padding / OOV rows
    items[7] = 0  # an item without text
    users = rng.normal(size=(tiny_schema.n_users, D)).astype(np.float32)
    users[3] = 0  # a user outside the generation budget
    batch = {"user": torch.tensor([3, 4, 5, 3, 6]), "item": torch.tensor([7, 8, 9, 10, 7]),
             "hist": torch.tensor([[0, 0, 8, 9], [0, 7, 8, 9], [10, 11, 12, 13], [0, 0, 0, 0], [0, 0, 0, 7]]),
             "hist_len": torch.tensor([2, 3, 4, 0, 1]),
             "brand": torch.zeros(B, dtype=torch.long), "cats": torch.zeros(B, 2, dtype=torch.long)}

    tf = TextEmbFeature(items, dim=4, hidden=8, dropout=0.0)
    assert tf(batch).shape == (B, 4)
    kar = KARFeature(users, items, dim=4, hidden=8, shared=1, dedicated=2, dropout=0.0)
    out = kar(batch)
    assert out.shape == (B, 8) and kar.dim == 8
    with torch.no_grad():
        kar.missing["user"].fill_(3.0)
        kar.missing["item"].fill_(-2.0)
    out = kar(batch)
    assert torch.all(out[0, :4] == 3.0) and torch.all(out[3, :4] == 3.0)  # user 3: no text -> the learned vector
    assert torch.all(out[0, 4:] == -2.0) and torch.all(out[4, 4:] == -2.0)  # item 7: no text
    assert not torch.all(out[1, :4] == 3.0) and not torch.all(out[1, 4:] == -2.0)
    out.sum().backward()
    assert kar.missing["user"].grad.abs().sum() > 0 and kar.missing["item"].grad.abs().sum() > 0

    g = kar.adaptor.gates(torch.as_tensor(users[4:6]), "user")
    assert g.shape == (2, 3) and torch.allclose(g.sum(1), torch.ones(2))
    assert len(kar.adaptor.shared) == 1 and len(kar.adaptor.dedicated["item"]) == 2

    for name in ("DIN", "DCN", "xDeepFM"):
        bb = BACKBONES.get(name)(tiny_schema, embed_dim=4, mlp=(8,), dropout=0.0, extra_dim=kar.dim)
        res = AugmentedModel(bb, kar)(batch)
        assert res["logit"].shape == (B,) and torch.isfinite(res["logit"]).all()


def test_distilled_model_adds_the_soft_label_loss_only_in_training(tiny_schema):
    from llmcf.models.baselines import DistilledModel, soft_label_loss
    from llmcf.models.ranking import BACKBONES

    B = 4
    batch = {"user": torch.tensor([2, 3, 4, 5]), "item": torch.tensor([5, 6, 7, 8]),
             "hist": torch.zeros(B, 4, dtype=torch.long), "hist_len": torch.zeros(B, dtype=torch.long),
             "brand": torch.zeros(B, dtype=torch.long), "cats": torch.zeros(B, 2, dtype=torch.long),
             "kd_prob": torch.tensor([0.9, 0.1, 0.5, 0.5]), "kd_mask": torch.tensor([True, True, False, False])}
    m = DistilledModel(BACKBONES.get("DIN")(tiny_schema, embed_dim=4, mlp=(8,), dropout=0.0), 0.5, 2.0)
    m.train()
    out = m(batch)
    assert set(out["losses"]) == {"kd"} and out["losses"]["kd"] > 0
    m.eval()
    assert "kd" not in m(batch)["losses"]
    z = torch.tensor([2.0, -1.0, 0.3, 0.0])
    none = torch.zeros(4, dtype=torch.bool)
    assert soft_label_loss(z, batch["kd_prob"], none) == 0
    # the loss is minimal where the student's logit equals the teacher's
    p = torch.tensor([0.8, 0.3, 0.5, 0.5])
    at = soft_label_loss(torch.log(p / (1 - p)), p, ~none, 2.0)
    off = soft_label_loss(torch.log(p / (1 - p)) + 0.5, p, ~none, 2.0)
    assert off > at
    with pytest.raises(ValueError, match="kd_temperature"):
        DistilledModel(m.backbone, 1.0, 0.0)


# ---------------------------------------------------------------------------- fixtures: a tiny run
class CountingBackend:
    """Implements the backend interface: a text derived from the prompt; crashes after ``fail_after`` calls."""

    def __init__(self, fail_after=None):
        self.calls, self.rows, self.fail_after = 0, 0, fail_after

    def generate(self, prompts, params):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        self.calls += 1
        self.rows += len(prompts)
        return [[f"text {len(p[-1]['content'])} {p[-1]['content'][:20]}"] for p in prompts]

    def score_yes_no(self, prompts):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        self.calls += 1
        self.rows += len(prompts)
        return np.array([(len(p[-1]["content"]) % 10) / 10 + 0.05 for p in prompts])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A built run (24 users × 8 rows, 20 items, ratings as labels), its item texts embedded, a random tiny Llama."""
    from test_cli import _write_atomic
    from test_llm_backends import make_tiny_model_dir

    root = tmp_path_factory.mktemp("baselines")
    _write_atomic(root / "toy", n_users=24, n_items=20, per_user=8)
    run = root / "run"
    assert main(["data", "build", "--dataset", str(root / "toy"), "--out", str(run), "--set", "data.label=rating",
                 "--set", "data.history_len=5"]) == 0
    sets = [f"embed.cache_dir={root / 'embcache'}"]
    assert main(["embed", "--run", str(run), *sum((["--set", s] for s in sets), [])]) == 0
    model = make_tiny_model_dir(root / "tiny_llama")
    return {"run": run, "model": model, "sets": sets}


def _copy_run(tiny_run, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(tiny_run["run"], dst)
    return dst


def _cfg(tiny_run, *extra):
    return load_config(None, [*tiny_run["sets"], "recgen.skip=true", "llm.backend=hf",
                              f"llm.model={tiny_run['model']}", "llm.batch_size=4", "baseline.kar_shard_size=8",
                              "baseline.kar_max_new_tokens=6", "baseline.kd_shard_size=8", "baseline.kd_rows=30",
                              *extra])


# ---------------------------------------------------------------------------- KAR
def test_kar_user_prompt_uses_only_the_users_training_interactions(tiny_run):
    from llmcf.llm.baselines.kar import build_kar_pool
    from llmcf.llm.recgen.prompts import item_texts

    data = tiny_run["run"] / "data"
    split = {s: pd.read_parquet(data / f"{s}.parquet") for s in ("train", "valid", "test")}
    items = pd.read_parquet(data / "items.parquet")
    texts = item_texts(items, blank="placeholder", style="full")
    cfg = _cfg(tiny_run, "baseline.kar_history_items=50")
    pool = build_kar_pool(split["train"], items, cfg)
    users = pool[pool["kind"] == "user"].set_index("id")["prompt"]
    assert len(users) == split["train"]["user_id"].nunique() and (pool["kind"] == "item").sum() == len(items)
    checked = 0
    for u, prompt in users.items():
        mine = {s: df.loc[df["user_id"].astype(str) == u, "item_id"].astype(str) for s, df in split.items()}
        held_out = set(mine["valid"]) | set(mine["test"])
        assert held_out, "the fixture should hold out rows of every user"
        for i in held_out - set(mine["train"]):
            assert f"{texts[i]} — " not in prompt, f"user {u}'s text prompt shows held-out item {i}"
            checked += 1
        for i in mine["train"]:
            assert f"{texts[i]} — " in prompt
    assert checked >= len(users)


def test_kar_text_shards_resume_after_an_interruption(tiny_run, tmp_path):
    from llmcf.errors import RunError
    from llmcf.llm.baselines.kar import kar_dir, read_kar_texts, run_kar_generate

    run = _copy_run(tiny_run, tmp_path)
    cfg = _cfg(tiny_run)  # 24 users + 20 items = 44 texts: 6 shards of 8, 2 backend calls per shard
    crashing = CountingBackend(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_kar_generate(run, cfg, backend=crashing)
    shards = sorted((kar_dir(run) / "shards").glob("shard_*.jsonl"))
    assert len(shards) == 2
    before = {p.name: p.read_text() for p in shards}
    with pytest.raises(RunError, match="incomplete"):
        read_kar_texts(run)
    u_part, i_part, _ = read_kar_texts(run, partial=True)  # a budget cut short: the finished shards' texts
    assert len(u_part) + len(i_part) == 16
    second = CountingBackend()
    manifest = run_kar_generate(run, cfg, backend=second)
    assert second.rows == 44 - 16 and manifest["complete"] and manifest["cost"]["rows_processed"] == 44
    assert all((kar_dir(run) / "shards" / n).read_text() == t for n, t in before.items())  # kept, not redone
    users, items, _ = read_kar_texts(run)
    assert len(users) == 24 and len(items) == 20
    third = CountingBackend()
    run_kar_generate(run, cfg, backend=third)
    assert third.calls == 0  # finished: nothing regenerated

    fresh = _copy_run(tiny_run, tmp_path / "fresh")
    run_kar_generate(fresh, cfg, backend=CountingBackend())
    assert read_kar_texts(fresh)[:2] == (users, items)  # resumed = uninterrupted


def test_kar_budget_samples_users_and_items(tiny_run, tmp_path):
    from llmcf.llm.baselines.kar import read_kar_texts, run_kar_generate

    run = _copy_run(tiny_run, tmp_path)
    be = CountingBackend()
    run_kar_generate(run, _cfg(tiny_run, "baseline.kar_users=5", "baseline.kar_items=3"), backend=be)
    users, items, manifest = read_kar_texts(run)
    assert (len(users), len(items), be.rows, manifest["rows"]) == (5, 3, 8, 8)

    from llmcf.llm.baselines.kar import build_kar_pool

    train = pd.read_parquet(run / "data" / "train.parquet")
    pool = build_kar_pool(train, pd.read_parquet(run / "data" / "items.parquet"),
                          _cfg(tiny_run, "baseline.kar_users=5", "baseline.kar_items=3", "baseline.kar_sample=popular"))
    counts = train["item_id"].astype(str).value_counts()
    picked = pool.loc[pool["kind"] == "item", "id"]
    assert counts[picked].min() >= counts.drop(picked).max()  # the most-read items first


# ---------------------------------------------------------------------------- KD
def test_kd_scores_are_cached_and_reused(tiny_run, tmp_path):
    from llmcf.llm.baselines.kd import kd_dir, read_kd_scores, run_kd_score

    run = _copy_run(tiny_run, tmp_path)
    n_train = len(pd.read_parquet(run / "data" / "train.parquet"))
    cfg = _cfg(tiny_run)
    with pytest.raises(KeyboardInterrupt):
        run_kd_score(run, cfg, backend=CountingBackend(fail_after=2))
    part = read_kd_scores(run, n_train, partial=True)[1]
    assert part.sum() == 16
    be = CountingBackend()
    run_kd_score(run, cfg, backend=be)
    assert be.rows == 30 - 16
    prob, mask, manifest = read_kd_scores(run, n_train)
    assert mask.sum() == 30 and prob.shape == (n_train,) and np.all((prob[mask] > 0) & (prob[mask] < 1))
    assert np.all(prob[~mask] == 0) and manifest["cost"]["rows_processed"] == 30

    again = CountingBackend()
    run_kd_score(run, cfg, backend=again)
    assert again.calls == 0  # cache reused
    # another sample size is another generation (the old one archived and restored when switched back)
    other = CountingBackend()
    run_kd_score(run, _cfg(tiny_run, "baseline.kd_rows=10"), backend=other)
    assert other.rows == 10 and read_kd_scores(run, n_train)[1].sum() == 10
    back = CountingBackend()
    run_kd_score(run, cfg, backend=back)
    assert back.calls == 0 and read_kd_scores(run, n_train)[1].sum() == 30
    assert (kd_dir(run) / "previous").is_dir()


# ---------------------------------------------------------------------------- end to end through the CLI
@pytest.mark.parametrize("baseline", ["textemb", "kd", "kar"])
def test_train_baseline_end_to_end(tiny_run, tmp_path, baseline, capsys):
    run = _copy_run(tiny_run, tmp_path)
    sets = [*tiny_run["sets"], "recgen.skip=true", "llm.backend=hf", f"llm.model={tiny_run['model']}",
            "llm.batch_size=8", "baseline.kar_max_new_tokens=4", "baseline.kd_rows=24", "baseline.kar_users=10",
            "train.max_epochs=1", "train.batch_size=32", "baseline.dim=4", "baseline.hidden=8"]
    args = ["train", "--run", str(run), "--model", "DIN", "--baseline", baseline, "--quiet"]
    tag = f"DIN+{baseline}"
    plan = _baseline_plan(run, sets, baseline)
    assert (plan["name"], plan["tag"], plan["pending_seeds"]) == (f"train {tag}", tag, [0])
    assert main([*args, *sum((["--set", s] for s in sets), [])]) == 0
    assert _baseline_plan(run, sets, baseline)["cached_seeds"] == [0]  # the trained seed, its LLM-stage stamp aside
    summary = json.loads((run / "models" / tag / "summary.json").read_text())
    res = json.loads((run / "models" / tag / "seed_0" / "result.json").read_text())
    assert 0 <= res["test"]["auc"] <= 1 and res["test"]["logloss"] > 0
    assert summary["protocol"]["baseline"]["name"] == baseline
    stage = summary["llm_stage"]
    if baseline == "kd":
        assert stage["rows_scored"] == 24 and stage["cost"]["rows_processed"] == 24
    elif baseline == "kar":
        assert stage["users_with_text"] == 10 and stage["items_with_text"] == 20
        assert stage["cost"]["rows_processed"] == 30
        # coverage: the share of each split's rows whose user / item got a text, counted here from the files
        from llmcf.llm.baselines.kar import read_kar_texts

        users, items, _ = read_kar_texts(run)
        for split in ("train", "test"):
            df = pd.read_parquet(run / "data" / f"{split}.parquet")
            want = {"user": df.user_id.astype(str).isin(users).mean(), "item": df.item_id.astype(str).isin(items).mean()}
            assert stage["coverage"][split] == pytest.approx(want, abs=1e-4)
        assert 0 < stage["coverage"]["train"]["user"] < 1
    else:
        assert stage["llm"] is False
    _served_equals_offline(run, tag, res)
    capsys.readouterr()
    # a second run finds the trained seed and the LLM stage's outputs: nothing retrained or regenerated
    assert main([*args, *sum((["--set", s] for s in sets), [])]) == 0
    out = capsys.readouterr().out
    assert "cached" in out.lower()
    assert json.loads((run / "models" / tag / "seed_0" / "result.json").read_text()) == res


def _baseline_plan(run, sets: list[str], baseline: str) -> dict:
    """`llmcf run --plan`'s row for DIN+<baseline> when the run lists it under `baselines:`."""
    from llmcf.config import load_config
    from llmcf.plan import make_plan

    cfg = load_config(str(run / "config.yaml"), [*sets, "models=[DIN]", "variants=[base]", f"baselines=[{baseline}]"])
    cfg.seq_models = []
    rows = [r for r in make_plan(cfg, run) if r.get("tag", "").startswith("DIN+")]
    assert len(rows) == 1
    return rows[0]


def _served_equals_offline(run, tag: str, res: dict) -> None:
    """The service's scores of the test rows give the test metrics training recorded (offline = online)."""
    from llmcf.serve import Scorer
    from llmcf.train.metrics import ctr_metrics

    test = pd.read_parquet(run / "data" / "test.parquet")
    scorer = Scorer.load(run, tag)
    online = scorer.score_rows(test.user_id.tolist(), [list(h) for h in test.history], test.item_id.tolist(),
                               test.pos.to_numpy())
    got = ctr_metrics(test["label"].to_numpy(np.float32), np.asarray(online), None)
    assert got["auc"] == pytest.approx(res["test"]["auc"], abs=1e-6)
    assert got["logloss"] == pytest.approx(res["test"]["logloss"], abs=1e-5)
    u, h, cands = str(test.user_id.iloc[0]), list(test.history.iloc[0]), test.item_id.tolist()[:5]
    one = scorer.score(cands, h, u)  # one request, five candidates: the rows' scores
    np.testing.assert_allclose(one.scores, scorer.score_rows([u] * 5, [h] * 5, cands), atol=1e-6)


def test_residual_baselines_start_at_the_backbone_and_keep_it_frozen(tiny_schema):
    from llmcf.models.baselines import TextEmbFeature
    from llmcf.models.ranking import BACKBONES
    from llmcf.models.residual import FeatureHead, GatedLogit, ResidualModel

    rng = np.random.default_rng(0)
    items = rng.normal(size=(tiny_schema.n_items, 6)).astype(np.float32)
    B = 8
    batch = {"user": torch.arange(3, 3 + B), "item": torch.arange(7, 7 + B),
             "hist": torch.randint(1, tiny_schema.n_items, (B, 4)), "hist_len": torch.full((B,), 4),
             "brand": torch.zeros(B, dtype=torch.long), "cats": torch.zeros(B, 2, dtype=torch.long),
             "label": torch.tensor([1.0, 0.0] * (B // 2))}

    def make(name):
        return BACKBONES.get(name)(tiny_schema, embed_dim=4, mlp=(8,), dropout=0.3, batch_norm=True)

    torch.manual_seed(0)
    base = make("DIN").eval()
    deltas = {"textemb": FeatureHead(TextEmbFeature(items, dim=4, hidden=8, dropout=0.0)),
              "boost": GatedLogit(make("DIN"))}
    for kind, delta in deltas.items():
        model = ResidualModel(make("DIN"), delta)
        model.backbone.load_state_dict(base.state_dict())
        model.freeze_backbone()
        model.train()
        assert not model.backbone.training and model.delta.training
        with torch.no_grad():  # starts exactly at the base model (dropout of the delta aside: none in its output)
            assert torch.equal(model.eval()(batch)["logit"], base(batch)["logit"]), kind
        model.train()
        before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
        for _ in range(4):
            out = model(batch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logit"], batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = model.backbone.state_dict()
        assert any("running_mean" in k for k in before)
        assert all(torch.equal(before[k], after[k]) for k in before), kind  # weights and BN statistics kept
        with torch.no_grad():
            moved = model.eval()(batch)["logit"] - base(batch)["logit"]
        assert moved.abs().max() > 1e-4, kind  # the residual learned something
    assert deltas["boost"].gate.item() != 0


def test_residual_baselines_end_to_end_keep_the_base_weights(tiny_run, tmp_path, capsys):
    from safetensors.torch import load_file

    run = _copy_run(tiny_run, tmp_path)
    sets = [*tiny_run["sets"], "recgen.skip=true", "train.max_epochs=2", "train.batch_size=32", "baseline.dim=4",
            "baseline.hidden=8"]
    flags = sum((["--set", s] for s in sets), [])
    args = ["train", "--run", str(run), "--model", "DCN", "--quiet"]
    # before the base model exists: a clear error, nothing trained
    assert main([*args, "--baseline", "boost", *flags]) == 1
    assert "train it first" in capsys.readouterr().err
    assert main([*args, "--baseline", "kd", *flags, "--set", "baseline.residual=true"]) == 1
    assert "kd has no feature" in capsys.readouterr().err
    assert main([*args, *flags]) == 0
    base_w = load_file(str(run / "models" / "DCN" / "seed_0" / "model.safetensors"))
    for baseline, extra, tag in (("textemb", ["--set", "baseline.residual=true"], "DCN+textemb-residual"),
                                 ("boost", [], "DCN+boost")):
        assert main([*args, "--baseline", baseline, *flags, *extra]) == 0
        w = load_file(str(run / "models" / tag / "seed_0" / "model.safetensors"))
        for k, v in base_w.items():
            assert torch.equal(w[f"backbone.{k}"], v), (tag, k)
        res = json.loads((run / "models" / tag / "seed_0" / "result.json").read_text())
        base_res = json.loads((run / "models" / "DCN" / "seed_0" / "result.json").read_text())
        # epoch 0 is validated before any step: the residual model ends at the base or above it on validation
        assert res["valid"]["auc"] >= base_res["valid"]["auc"] - 1e-9, tag
        _served_equals_offline(run, tag, res)


def test_train_baseline_rejects_the_ict_and_run_rejects_unknown_baselines(tiny_run, tmp_path, capsys):
    assert main(["train", "--run", str(tiny_run["run"]), "--model", "DIN", "--baseline", "kd", "--ict"]) == 1
    assert "separate methods" in capsys.readouterr().err
    assert main(["run", "--config", "demo", "--out", str(tmp_path / "r"), "--set", "baselines=[kar, nope]"]) == 1
    assert "unknown baseline 'nope'" in capsys.readouterr().err


def test_a_baseline_model_hashes_only_the_fields_it_reads():
    from llmcf.fingerprint import ctr_config_hash

    def h(name, *sets):
        return ctr_config_hash(load_config(None, [f"baseline.name={name}", *sets]), "DIN")

    assert h("textemb") == h("textemb", "baseline.kar_users=5", "baseline.kd_rows=7")
    assert h("kd") == h("kd", "baseline.kar_users=5", "baseline.dim=8")
    assert h("kar") == h("kar", "baseline.kd_rows=7") != h("kar", "baseline.kar_users=5")
    assert h("textemb") != h("textemb", "baseline.dim=8") and h("kd") != h("kd", "baseline.kd_weight=0.5")
    assert h("textemb") != h("kar") and ctr_config_hash(load_config(None, []), "DIN") != h("kd")
    assert h("textemb") != h("textemb", "baseline.residual=true")
    assert h("boost") == h("boost", "baseline.dim=8", "baseline.kd_rows=7") != h("textemb")


def test_a_run_plan_with_a_residual_baseline_needs_the_base_model():
    from llmcf.config import ConfigError
    from llmcf.pipeline import check_plan

    check_plan(load_config(None, ["models=[DCN]", "variants=[base, no_cot]", "baselines=[boost]"]))
    with pytest.raises(ConfigError, match="add 'base' to variants"):
        check_plan(load_config(None, ["models=[DCN]", "variants=[no_cot]", "baselines=[boost]"]))
    with pytest.raises(ConfigError, match="kd has no feature"):
        check_plan(load_config(None, ["models=[DCN]", "baselines=[textemb, kd]", "baseline.residual=true"]))


def test_a_shard_job_returning_other_rows_is_refused():
    from llmcf.config import LLMConfig
    from llmcf.errors import LLMCFError
    from llmcf.llm.executors import run_shards

    class Shuffling:
        columns = ("key",)

        def setup(self):
            self.ready = True

        def run(self, rows, k):
            return [{"key": key} for key in reversed(rows["key"].tolist())], 0

    pool = pd.DataFrame({"key": [f"r{i}" for i in range(6)]})
    with pytest.raises(LLMCFError, match="shard 0: the worker returned records for other rows"):
        list(run_shards(Shuffling(), pool, [0, 1], 3, LLMConfig()))


def test_tune_a_baseline_through_the_cli(tiny_run, tmp_path, capsys):
    """`llmcf tune --baseline kar`: its own study (DIN+kar), every trial trains the baseline with the trial's
    baseline values, and the KAR texts are generated once for the whole study."""
    run = _copy_run(tiny_run, tmp_path)
    space = "{baseline.dim: {choices: [4, 8]}, baseline.kar_shared_experts: {low: 1, high: 2}}"
    sets = [*tiny_run["sets"], "recgen.skip=true", "llm.backend=hf", f"llm.model={tiny_run['model']}",
            "llm.batch_size=8", "baseline.kar_max_new_tokens=4", "baseline.kar_users=10", "train.max_epochs=1",
            "train.batch_size=32", "baseline.hidden=8", "tune.startup_trials=3",
            "tune.space={train.lr: {low: 0.001, high: 0.05, log: true}}", "tune.models={}",
            f"tune.baselines={{kar: {space}}}"]
    args = ["tune", "--run", str(run), "--model", "DIN", "--baseline", "kar", "--trials", "3"]
    assert main([*args, *sum((["--set", s] for s in sets), [])]) == 0
    out = run / "tune" / "DIN+kar"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "kar" and summary["trials"] == 3
    assert set(summary["space"]) == {"train.lr", "baseline.dim", "baseline.kar_shared_experts"}
    gens = set()
    for trial in summary["all"]:
        trained = json.loads((out / "trials" / str(trial["number"]) / "models" / "DIN+kar" / "summary.json")
                             .read_text())
        b = trained["protocol"]["baseline"]
        assert b["name"] == "kar" and b["dim"] == trial["params"]["baseline.dim"]
        assert b["kar_shared_experts"] == trial["params"]["baseline.kar_shared_experts"]
        gens.add(json.dumps(trained["llm_stage"]["cost"], sort_keys=True))
        assert trained["llm_stage"]["users_with_text"] == 10
    assert len(gens) == 1  # one generation read by every trial
    assert load_config(out / "best.yaml").baseline.name == "kar"
    with pytest.raises(SystemExit):  # argparse: --baseline boost has nothing of its own to search
        main(["tune", "--run", str(run), "--model", "DIN", "--baseline", "boost"])
    capsys.readouterr()
    assert main(["tune", "--run", str(run), "--model", "DIN", "--baseline", "kar", "--ict"]) == 1
    assert "separate methods" in capsys.readouterr().err


def test_a_generation_is_resumed_whatever_the_run_path_is_spelled(tiny_run, tmp_path, monkeypatch):
    """The tuned model is recorded by its path inside the run: reaching the run by another path (relative,
    absolute, a moved folder) resumes its texts instead of generating them again, also for a manifest written
    when the path was recorded as the command spelled it."""
    from pathlib import Path

    from llmcf import fingerprint
    from llmcf.llm.baselines.kar import run_kar_generate

    run = _copy_run(tiny_run, tmp_path)
    model = run / "llm" / "recgen" / "model"
    model.mkdir(parents=True)
    (model / "adapter_model.safetensors").write_bytes(b"weights")
    cfg = _cfg(tiny_run, "recgen.skip=false", "baseline.kar_users=4", "baseline.kar_items=2")
    first = CountingBackend()
    m1 = run_kar_generate(run, cfg, backend=first)
    assert m1["model"]["kind"] == "recgen" and m1["model"]["path"] == "llm/recgen/model" and first.rows == 6
    monkeypatch.chdir(run.parent)
    again = CountingBackend()
    assert run_kar_generate(Path("run"), cfg, backend=again)["gen_id"] == m1["gen_id"] and again.rows == 0
    moved = tmp_path / "moved"
    run.rename(moved)
    assert run_kar_generate(moved, cfg, backend=again)["gen_id"] == m1["gen_id"] and again.rows == 0
    # a manifest of the old kind: the path as some command line spelled it, hashed into its id
    mpath = moved / "baselines" / "kar" / "manifest.json"
    old = json.loads(mpath.read_text())
    old["model"] = {**old["model"], "path": "../elsewhere/run/llm/recgen/model"}
    old["gen_id"] = fingerprint.generation_id({k: old[k] for k in ("pool_hash", "model", "sampling")})
    mpath.write_text(json.dumps(old))
    m3 = run_kar_generate(moved, cfg, backend=again)
    assert again.rows == 0 and m3["gen_id"] == old["gen_id"]
    assert m3["model"]["path"] == "../elsewhere/run/llm/recgen/model"  # kept: the manifest stays self-consistent
    assert run_kar_generate(moved, cfg, backend=again)["gen_id"] == old["gen_id"] and again.rows == 0
    # another model (other weights) is another generation
    (moved / "llm" / "recgen" / "model" / "adapter_model.safetensors").write_bytes(b"other weights")
    assert run_kar_generate(moved, cfg, backend=again)["gen_id"] not in (m1["gen_id"], old["gen_id"])
    assert again.rows == 6
