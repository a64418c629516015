"""The baselines of the training stage, one registered class each (``BASELINE_METHODS``): what a ``<backbone>+<name>``
model reads, how it is built, which per-row arrays its training batches carry, and what its LLM stage cost.

    textemb  frozen item-text vectors (embed/items.npy; run `llmcf embed`) → ``TextEmbFeature`` → extra input
    kd       the teacher's p(Yes) on a sample of train rows (``llmcf.llm.baselines.kd``, run here when missing or
             unfinished) → ``DistilledModel``'s soft-label loss
    kar      KAR's user/item texts (``llmcf.llm.baselines.kar``, run here when missing or unfinished), embedded with
             the configured encoder (cached) → ``KARFeature`` (hybrid-expert adaptor) → extra input
    boost    a second backbone fitted to the residual of the trained base model (``llmcf.models.residual``)
With ``baseline.residual`` a feature baseline (textemb, kar) does not enter the backbone's input: its feature learns
the residual of the trained base model of the same seed, kept frozen (``ResidualModel`` + ``FeatureHead``; the CTR
task loads the base weights, as for ``ict.warm_start``). Settings: the ``baseline`` config section
(``llmcf.config.BaselineConfig``). The backbone, optimiser, data and early stopping are the CTR task's, unchanged.
"""
from __future__ import annotations

import numpy as np
import torch

from llmcf.config import Config
from llmcf.fingerprint import files_fingerprint, text_digest
from llmcf.registry import Registry

BASELINE_METHODS: Registry = Registry("baseline")


def backbone(model_name: str, run, cfg: Config, extra_dim: int = 0) -> torch.nn.Module:
    """The registered ranking backbone built as ``build_model`` builds it, with ``extra_dim``."""
    from llmcf.models.ranking import BACKBONES

    m = cfg.model
    return BACKBONES.get(model_name)(run.schema, embed_dim=m.embed_dim, mlp=tuple(m.mlp), dropout=m.dropout,
                                     extra_dim=extra_dim, **m.params_for(model_name))


def _memo(run, key: str, make):
    cache = run.__dict__.setdefault("_baseline_memo", {})
    if key not in cache:
        cache[key] = make()
    return cache[key]


class Baseline:
    """Defaults: no LLM stage, no extra training arrays."""

    name = ""

    def prepare(self, run, cfg: Config) -> None:
        """Run (or resume) the LLM stage this baseline reads."""

    def stamp(self, run, cfg: Config) -> str:
        """Fingerprint of the artifacts the model reads (part of its cache key)."""
        return ""

    def residual(self, cfg: Config) -> bool:
        """True: the model is a ``ResidualModel`` over the trained, frozen base model (see the module docstring)."""
        from llmcf.config import check_residual_baseline

        check_residual_baseline(cfg.baseline)
        return bool(cfg.baseline.residual)

    def feature(self, run, cfg: Config) -> torch.nn.Module:
        """The feature module (``.dim`` wide) of a feature baseline."""
        raise NotImplementedError

    def build(self, model_name: str, run, cfg: Config) -> torch.nn.Module:
        """A feature baseline: ``AugmentedModel`` (the feature as the backbone's extra input), or with
        ``baseline.residual`` a ``ResidualModel`` whose ``FeatureHead`` learns the base model's residual."""
        feature = self.feature(run, cfg)
        if self.residual(cfg):
            from llmcf.models.residual import FeatureHead, ResidualModel

            return ResidualModel(backbone(model_name, run, cfg), FeatureHead(feature))
        from llmcf.models.baselines import AugmentedModel

        return AugmentedModel(backbone(model_name, run, cfg, feature.dim), feature)

    def train_arrays(self, run, cfg: Config) -> dict[str, np.ndarray]:
        return {}

    def llm_stage(self, run, cfg: Config) -> dict:
        return {"llm": False}


@BASELINE_METHODS.register("textemb")
class TextEmb(Baseline):
    name = "textemb"

    def stamp(self, run, cfg):
        return files_fingerprint([run.rd.item_emb, run.rd.item_ids])

    def feature(self, run, cfg):
        from llmcf.models.baselines import TextEmbFeature
        from llmcf.models.context import item_text_matrix

        b = cfg.baseline
        text = _memo(run, "item_text", lambda: item_text_matrix(run.run_dir, run.vocab))
        return TextEmbFeature(text, dim=b.dim, hidden=b.hidden, dropout=b.dropout)

    def llm_stage(self, run, cfg):
        meta = run.rd.read_json(run.rd.embed / "meta.json", {}) or {}
        return {"llm": False, "texts_embedded": meta.get("n_items"), "encoder": meta.get("model_id"),
                "seconds": meta.get("seconds"), "what": "item texts embedded by `llmcf embed` (no generation)"}


@BASELINE_METHODS.register("kd")
class KD(Baseline):
    name = "kd"

    def prepare(self, run, cfg):
        from llmcf.llm.baselines.kd import run_kd_score

        if not cfg.baseline.partial:
            _memo(run, "kd_manifest", lambda: run_kd_score(run.run_dir, cfg))

    def _scores(self, run, cfg):
        from llmcf.llm.baselines.kd import read_kd_scores

        partial = cfg.baseline.partial
        return _memo(run, f"kd_scores_{partial}",
                     lambda: read_kd_scores(run.run_dir, len(run.arrays["train"]["label"]), partial))

    def stamp(self, run, cfg):
        prob, mask, manifest = self._scores(run, cfg)
        return text_digest(f"{manifest['gen_id']}|{int(mask.sum())}", 12)

    def build(self, model_name, run, cfg):
        from llmcf.models.baselines import DistilledModel

        self.residual(cfg)  # refuses baseline.residual: kd has no feature
        b = cfg.baseline
        return DistilledModel(backbone(model_name, run, cfg), b.kd_weight, b.kd_temperature)

    def train_arrays(self, run, cfg):
        prob, mask, _ = self._scores(run, cfg)
        return {"kd_prob": prob, "kd_mask": mask}

    def llm_stage(self, run, cfg):
        prob, mask, manifest = self._scores(run, cfg)
        from llmcf.train.metrics import ctr_metrics

        labels = run.arrays["train"]["label"][mask]
        teacher = ctr_metrics(labels, prob[mask]) if len(np.unique(labels)) == 2 else {}
        return {"llm": True, "what": "teacher p(Yes) of sampled train rows", "rows_scored": int(mask.sum()),
                "rows_sampled": manifest.get("rows"), "partial": bool(cfg.baseline.partial),
                "model": manifest.get("model", {}).get("kind"), "cost": manifest.get("cost"),
                "teacher_train_auc": teacher.get("auc"), "teacher_train_logloss": teacher.get("logloss")}


@BASELINE_METHODS.register("kar")
class KAR(Baseline):
    name = "kar"

    def prepare(self, run, cfg):
        from llmcf.llm.baselines.kar import run_kar_generate

        if not cfg.baseline.partial:
            _memo(run, "kar_manifest", lambda: run_kar_generate(run.run_dir, cfg))

    def _vectors(self, run, cfg):
        def make():
            from llmcf.embed import make_encoder
            from llmcf.llm.baselines.kar import read_kar_texts

            users, items, manifest = read_kar_texts(run.run_dir, cfg.baseline.partial)
            enc = make_encoder(run.run_dir, cfg)
            u_ids, i_ids = sorted(users), sorted(items)
            vecs = enc.encode([users[u] for u in u_ids] + [items[i] for i in i_ids], desc="embed KAR texts")
            D = vecs.shape[1]
            U = np.zeros((run.vocab.n_users, D), dtype=np.float32)
            I = np.zeros((run.vocab.n_items, D), dtype=np.float32)
            ue, ie = run.vocab.encode_users(u_ids), run.vocab.encode_items(i_ids)
            from llmcf.data.schema import OOV

            U[ue[ue > OOV]] = vecs[:len(u_ids)][ue > OOV]
            I[ie[ie > OOV]] = vecs[len(u_ids):][ie > OOV]
            return U, I, manifest, enc.model_id, len(u_ids) + len(i_ids)

        return _memo(run, f"kar_vectors_{cfg.baseline.partial}", make)

    def stamp(self, run, cfg):
        _, _, manifest, model_id, n = self._vectors(run, cfg)
        return text_digest(f"{manifest['gen_id']}|{model_id}|{n}", 12)

    def feature(self, run, cfg):
        from llmcf.models.baselines import KARFeature

        b = cfg.baseline
        U, I, _, _, _ = self._vectors(run, cfg)
        return KARFeature(U, I, dim=b.dim, hidden=b.hidden, shared=b.kar_shared_experts,
                          dedicated=b.kar_dedicated_experts, dropout=b.dropout)

    def llm_stage(self, run, cfg):
        U, I, manifest, model_id, n = self._vectors(run, cfg)
        return {"llm": True, "what": "one preference text per user, one knowledge text per item",
                "texts": n, "texts_planned": manifest.get("rows"), "partial": bool(cfg.baseline.partial),
                "users_with_text": int((np.abs(U).sum(1) > 0).sum()),
                "items_with_text": int((np.abs(I).sum(1) > 0).sum()), "max_new_tokens": cfg.baseline.kar_max_new_tokens,
                "coverage": kar_coverage(run.arrays, U, I),
                "model": manifest.get("model", {}).get("kind"), "cost": manifest.get("cost"), "encoder": model_id}


def kar_coverage(arrays: dict, U: np.ndarray, I: np.ndarray) -> dict[str, dict[str, float]]:
    """Per split, the share of rows whose user (``U`` row non-zero) and whose target item (``I`` row) has a KAR
    text: a budget that writes texts for few users/items leaves most rows reading the learned "missing" vector."""
    has_u, has_i = np.abs(U).sum(1) > 0, np.abs(I).sum(1) > 0
    return {split: {"user": round(float(has_u[a["user"]].mean()), 4), "item": round(float(has_i[a["item"]].mean()), 4)}
            for split, a in arrays.items() if len(a.get("user", ())) and "item" in a}


@BASELINE_METHODS.register("boost")
class Boost(Baseline):
    name = "boost"

    def residual(self, cfg):
        return True

    def build(self, model_name, run, cfg):
        from llmcf.models.residual import GatedLogit, ResidualModel

        return ResidualModel(backbone(model_name, run, cfg), GatedLogit(backbone(model_name, run, cfg)))

    def llm_stage(self, run, cfg):
        return {"llm": False, "what": "a second backbone on the trained one's residual (no LLM, no text)"}


def get_baseline(name: str) -> Baseline:
    from llmcf.config import ConfigError

    if name not in BASELINE_METHODS:
        raise ConfigError(f"baseline '{name}': expected one of {', '.join(BASELINE_METHODS.names())}")
    return BASELINE_METHODS.get(name)()
