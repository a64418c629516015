"""ICT: the in-context chain-of-thought module of LLM-CF (DESIGN §1.5–1.6).

For each retrieved example j the module builds a features token f_j, a CoT token c_j and a label token y_j, then the
query's features token f_q; the sequence ``[f1,c1,y1, ..., fK,cK,yK, fq]`` runs through a small causal decoder and the
final-normed hidden state at f_q is the ICT feature ``w [B, dim]`` that a backbone takes as its ``extra`` input.

Tokens:
    features = MLP(concat of field embeddings: user id, item id, brand, mean categories, item text (mapped),
               means over the history items of item id, brand and mean categories, mapped mean history text)
    CoT      = text_mlp(frozen CoT embedding)   — text_mlp is the one MLP mapping encoder vectors to dim
    label    = Embedding(2, dim)[label]
Missing examples (``ctx_mask`` False) are zeroed and masked out as attention keys, so they never affect ``w``.

Variants:
    full       the paper's model, with the reconstruction loss
               recon = recon_weight · (1 − mean cos(MLP_up(h at each present example's features token), its CoT))
    no_cot     [f1,y1, ..., fK,yK, fq], no CoT tokens, no reconstruction loss
    mean_pool  w = MLP(mean of the present example tokens and f_q); no decoder, no reconstruction loss

Options:
    no_cot_token  a learned CoT token for examples without a CoT (``ctx_has_cot`` False: the hybrid bank); their
                  reconstruction term is left out
    sim_input     each example's retrieval similarity ``ctx_sim`` [B,K] enters all its tokens as ``Linear(1, dim)``

Hyper-parameters (defaults): dim=32, layers=2, heads=2, variant="full", dropout=0.1, field_dim=16, recon_weight=1.0,
no_cot_token=False, sim_input=False.
Batch inputs: the encoded batch (user, item, hist) plus ctx_user [B,K], ctx_item [B,K], ctx_hist [B,K,L],
ctx_label [B,K] int64, ctx_cot [B,K,D] float32 (unused by no_cot), ctx_mask [B,K] bool, and optionally ctx_row [B,K]
int64 (bank row ids: equal ids must carry equal inputs; when scoring, their features token is computed once per
batch).
The item text matrix and item side tables are non-persistent buffers: rebuild them from the run directory when loading
a checkpoint (``item_text_matrix`` in llmcf.models.context).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmcf.data.schema import FeatureSchema
from llmcf.errors import DataError
from llmcf.models.ict_layers import CausalDecoder

VARIANTS = ("full", "no_cot", "mean_pool")
CTX_KEYS = ("ctx_user", "ctx_item", "ctx_hist", "ctx_label", "ctx_mask")


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


def _bag_mean(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean of table rows over the non-zero ids of each row of ``ids`` [N, M] (zeros when none) -> [N, d]."""
    return F.embedding_bag(ids, table, mode="mean", padding_idx=0)


class ICT(nn.Module):
    def __init__(self, schema: FeatureSchema, item_text: torch.Tensor, cot_dim: int | None = None, dim: int = 32,
                 layers: int = 2, heads: int = 2, variant: str = "full", dropout: float = 0.1, field_dim: int = 16,
                 recon_weight: float = 1.0, no_cot_token: bool = False, sim_input: bool = False):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"ICT variant '{variant}': expected one of {', '.join(VARIANTS)}")
        item_text = torch.as_tensor(item_text, dtype=torch.float32)
        if item_text.ndim != 2 or item_text.shape[0] != schema.n_items:
            raise DataError(f"item text matrix has shape {tuple(item_text.shape)}, expected [{schema.n_items}, D] "
                            "(one row per item id, pad/OOV included)", field="item_text")
        text_dim = item_text.shape[1]
        self.uses_cot = variant != "no_cot"
        if self.uses_cot and cot_dim is not None and cot_dim != text_dim:
            raise DataError(f"CoT embeddings are {cot_dim}-d but item text embeddings are {text_dim}-d; the ICT maps "
                            "both with one MLP, so embed them with the same encoder", field="cot_dim")
        self.variant, self.dim, self.text_dim = variant, dim, text_dim
        self.recon_weight = float(recon_weight)
        self.register_buffer("item_text", item_text, persistent=False)
        self.register_buffer("item_brand", torch.as_tensor(schema.item_brand, dtype=torch.long), persistent=False)
        self.register_buffer("item_cats", torch.as_tensor(schema.item_cats, dtype=torch.long), persistent=False)

        self.user_emb = nn.Embedding(schema.n_users, field_dim)
        self.item_emb = nn.Embedding(schema.n_items, field_dim, padding_idx=0)
        self.brand_emb = nn.Embedding(schema.n_brands, field_dim, padding_idx=0)
        self.cat_emb = nn.Embedding(schema.n_cats, field_dim, padding_idx=0)
        for emb in (self.user_emb, self.item_emb, self.brand_emb, self.cat_emb):
            nn.init.normal_(emb.weight, std=0.05)
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()
        self.text_mlp = _mlp(text_dim, dim, dim)
        self.feat_mlp = _mlp(7 * field_dim + 2 * dim, 2 * dim, dim, dropout)  # user + 2 × (3 fields + text)
        self.label_emb = nn.Embedding(2, dim)
        if variant == "mean_pool":
            self.pool_mlp = _mlp(dim, dim, dim, dropout)
        else:
            self.decoder = CausalDecoder(dim, layers, heads, dropout)
        if variant == "full":
            self.recon_head = _mlp(dim, 2 * dim, text_dim)
        self.tokens_per_example = 3 if self.uses_cot else 2
        self.no_cot = nn.Parameter(torch.zeros(dim)) if no_cot_token and self.uses_cot else None
        self.sim_proj = nn.Linear(1, dim) if sim_input else None
        self._example_bank, self._example_cache, self._example_versions = None, None, None  # cache_examples
        self._example_params: list[nn.Parameter] | None = None

    # ---- tokens -------------------------------------------------------------------------------------------------
    def features(self, user: torch.Tensor, item: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """Features tokens for user [N], item [N], hist [N, L] (0-padded) -> [N, dim].

        Item-side id fields (item, brand, mean category) are computed once per distinct item of the call and gathered
        for targets and history positions; history fields are means over the present history items, and the history
        text field is the mapped mean of their (frozen) text embeddings."""
        n, hist_len = hist.shape
        # a request's candidates share one user and history: their user and history fields are computed once and
        # broadcast (the same numbers as computing every row)
        shared = n > 1 and bool((user == user[0]).all()) and bool((hist == hist[:1]).all())
        u, h = (user[:1], hist[:1]) if shared else (user, hist)
        uniq, inv = torch.unique(torch.cat([item, h.reshape(-1)]), return_inverse=True)
        table = torch.cat([
            self.item_emb(uniq),
            self.brand_emb(self.item_brand[uniq]),
            _bag_mean(self.item_cats[uniq], self.cat_emb.weight),
        ], -1) * (uniq > 0)[:, None]  # padding items contribute zeros
        hist_mean = table[inv[n:]].view(len(h), hist_len, -1).sum(1) / (h > 0).sum(1, keepdim=True).clamp_min(1)
        user_part = [self.user_emb(u), hist_mean, self.text_mlp(_bag_mean(h, self.item_text))]
        if shared:
            user_part = [x.expand(n, -1) for x in user_part]
        return self.feat_mlp(torch.cat([
            user_part[0],
            table[inv[:n]],
            self.text_mlp(F.embedding(item, self.item_text)),
            user_part[1],
            user_part[2],
        ], -1))

    def _examples(self, f_ex: torch.Tensor, ctx_cot: torch.Tensor | None, ctx_label: torch.Tensor,
                  ctx_has_cot: torch.Tensor | None) -> torch.Tensor:
        """The tokens of each example [..., tokens_per_example, dim] from its features tokens f_ex [..., dim] (and
        its CoT embedding [..., D], label [...], has-CoT flag [...])."""
        parts = [f_ex]
        if self.uses_cot:
            cot = self.text_mlp(ctx_cot.to(self.item_text.dtype))
            if self.no_cot is not None:
                cot = torch.where(ctx_has_cot.bool()[..., None], cot, self.no_cot)
            parts.append(cot)
        parts.append(self.label_emb(ctx_label.long()))
        return torch.stack(parts, -2)

    def cache_examples(self, bank: dict[str, torch.Tensor] | None) -> None:
        """Compute every bank row's example tokens once (scoring only: eval mode, no dropout) from
        ``bank`` = ``ContextBank.all_rows()`` (the ctx_* tensors of each row as [n + 1, 1], ctx_row = 0..n); a batch
        with ``ctx_row`` then gathers them instead of recomputing them, and needs no other ctx_* input than
        ctx_row and ctx_mask (and ctx_sim). The cache belongs to the weights it was computed with: if any
        parameter changes in place (an optimiser step, ``load_state_dict``) it is recomputed on next use, and
        it is never used in training mode. ``None`` drops it."""
        if bank is None:
            self._example_bank = self._example_cache = None
            return
        self._example_bank = {k: v for k, v in bank.items() if k != "ctx_row"}
        self._example_cache = self._example_params = None
        self._example_versions = None

    def _cached_examples(self) -> torch.Tensor | None:
        bank = self._example_bank
        if bank is None or self.training:
            return None
        if self._example_params is None:  # walking the module tree per request costs more than this check
            self._example_params = list(self.parameters())
        versions = (self.item_text.device, *(p._version for p in self._example_params))  # moved or changed: redo
        if self._example_cache is None or versions != self._example_versions:
            hist_len = bank["ctx_hist"].shape[-1]
            bank = {key: v.to(self.item_text.device) for key, v in bank.items()}  # where the model is now
            with torch.no_grad():
                f = self.features(bank["ctx_user"].reshape(-1), bank["ctx_item"].reshape(-1),
                                  bank["ctx_hist"].reshape(-1, hist_len))
                has = bank.get("ctx_has_cot")
                ex = self._examples(f, bank["ctx_cot"].reshape(len(f), -1) if self.uses_cot else None,
                                    bank["ctx_label"].reshape(-1), None if has is None else has.reshape(-1))
            self._example_cache, self._example_versions = ex, versions  # [n + 1, tpe, dim]
        return self._example_cache

    def tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input sequence [B, T, dim] and key-present mask [B, T] (T = tokens_per_example·K + 1)."""
        cache = self._cached_examples() if "ctx_row" in batch else None
        need = ("ctx_row", "ctx_mask") if cache is not None else \
            CTX_KEYS + (("ctx_cot",) if self.uses_cot else ()) + (("ctx_has_cot",) if self.no_cot is not None else ())
        need = need + (("ctx_sim",) if self.sim_proj else ())
        missing = [k for k in need if k not in batch]
        if missing:
            raise DataError(f"batch lacks the in-context inputs {missing}: gather them with ContextBank.gather",
                            field=missing[0])
        b, k = batch["ctx_mask"].shape
        if cache is not None:  # scoring with the bank's example tokens precomputed (cache_examples)
            ex = cache[batch["ctx_row"]]
            f_q = self.features(batch["user"], batch["item"], batch["hist"])
        else:
            hist_len = batch["hist"].shape[1]
            c_user, c_item = batch["ctx_user"].reshape(-1), batch["ctx_item"].reshape(-1)
            c_hist = batch["ctx_hist"].reshape(-1, hist_len)
            c_cot, c_label = batch.get("ctx_cot"), batch["ctx_label"].reshape(-1)
            c_has = batch.get("ctx_has_cot")
            if self.uses_cot:
                c_cot = c_cot.reshape(b * k, -1)
            if c_has is not None:
                c_has = c_has.reshape(-1)
            inv = None
            if "ctx_row" in batch:
                # a bank row recurs across a batch (a 240-row bank serves B·K slots; a user's candidates share most
                # of their examples), so its tokens are computed once and gathered per slot. In training the
                # features MLP's dropout mask is then drawn per distinct row and batch, not per slot.
                uniq, inv = torch.unique(batch["ctx_row"].reshape(-1), return_inverse=True)
                first = torch.empty(len(uniq), dtype=torch.long, device=inv.device)
                first.scatter_(0, inv, torch.arange(len(inv), device=inv.device))  # one slot holding each bank row
                c_user, c_item, c_hist, c_label = c_user[first], c_item[first], c_hist[first], c_label[first]
                if self.uses_cot:
                    c_cot = c_cot[first]
                if c_has is not None:
                    c_has = c_has[first]
            feats = self.features(torch.cat([c_user, batch["user"]]), torch.cat([c_item, batch["item"]]),
                                  torch.cat([c_hist, batch["hist"]]))
            n_ctx = len(c_user)
            f_ex, f_q = feats[:n_ctx], feats[n_ctx:]
            ex = self._examples(f_ex, c_cot, c_label, c_has)  # [n_ctx, tpe, dim]
            ex = (ex[inv] if inv is not None else ex).view(b, k, self.tokens_per_example, -1)
        mask = batch["ctx_mask"].bool()
        if self.sim_proj is not None:
            ex = ex + self.sim_proj(batch["ctx_sim"].to(ex.dtype)[..., None])[:, :, None, :]
        ex = ex * mask[:, :, None, None]  # [B, K, tpe, dim], missing examples zeroed
        seq = torch.cat([ex.reshape(b, k * self.tokens_per_example, -1), f_q[:, None]], 1)
        present = torch.cat([mask.repeat_interleave(self.tokens_per_example, 1),
                             torch.ones(b, 1, dtype=torch.bool, device=mask.device)], 1)
        return seq, present

    def token_names(self, k: int) -> list[str]:
        """Names of the sequence positions for K examples, e.g. ['f1', 'c1', 'y1', ..., 'fq']."""
        kinds = ("f", "c", "y") if self.uses_cot else ("f", "y")
        return [f"{t}{j + 1}" for j in range(k) for t in kinds] + ["fq"]

    # ---- forward ------------------------------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor], need_weights: bool = True,
               read_only: bool = False, query_only: bool = False) -> dict[str, torch.Tensor | None]:
        """Everything the forward pass computes: hidden [B,T,dim] (None for mean_pool), present [B,T],
        attention [B,H,T,T] of the last layer (for mean_pool: the pooling weights [B,1,1,T]; None when not
        ``need_weights``) and w [B,dim]. ``read_only`` (not with ``need_weights``): hidden [B, K + 1, dim] holds
        only the positions the forward pass reads, each example's features token and then f_q (the last layer
        computes nothing else; equal to those positions of the full hidden); ``query_only`` (with ``read_only``):
        hidden [B, 1, dim] holds f_q's alone (nothing reads the examples' positions: no reconstruction loss)."""
        seq, present = self.tokens(batch)
        if self.variant == "mean_pool":
            weights = present.to(seq.dtype) / present.sum(1, keepdim=True)
            w = self.pool_mlp((seq * weights[..., None]).sum(1))
            return {"hidden": None, "present": present, "attention": weights[:, None, None, :], "w": w}
        keep = None
        if read_only:
            t = seq.shape[1]
            last = torch.tensor([t - 1], device=seq.device)
            keep = last if query_only else \
                torch.cat([torch.arange(0, t - 1, self.tokens_per_example, device=seq.device), last])
        hidden, attn = self.decoder(seq, present, need_weights, keep)
        return {"hidden": hidden, "present": present, "attention": attn, "w": hidden[:, -1]}

    def recon_loss(self, hidden: torch.Tensor, cot: torch.Tensor, mask: torch.Tensor,
                   read_only: bool = False) -> torch.Tensor:
        """recon_weight · (1 − mean cos(MLP_up(h_f_j), cot_j)) over the present examples (0 when none); hidden is
        [B, T, dim], or [B, K + 1, dim] from ``encode(read_only=True)``."""
        h_f = hidden[:, :-1] if read_only else hidden[:, : -1 : self.tokens_per_example]  # [B, K, dim]
        cos = F.cosine_similarity(self.recon_head(h_f), cot.to(h_f.dtype), dim=-1)
        m = mask.to(cos.dtype)
        return self.recon_weight * ((1.0 - cos) * m).sum() / m.sum().clamp_min(1.0)

    def forward(self, batch: dict[str, torch.Tensor], return_attention: bool = False):
        """-> (w [B, dim], {"recon": scalar} for variant full else {}), plus the last layer's attention of the query
        position over the tokens [B, H, T] when ``return_attention`` (names: ``token_names(K)``)."""
        recon = self.variant == "full" and (self.training or "ctx_cot" in batch)  # scoring may gather ctx_row only
        out = self.encode(batch, need_weights=return_attention, read_only=not return_attention,
                          query_only=not recon)
        losses = {}
        if recon:
            mask = batch["ctx_mask"].bool()
            if self.no_cot is not None:
                mask = mask & batch["ctx_has_cot"].bool()
            losses["recon"] = self.recon_loss(out["hidden"], batch["ctx_cot"], mask, read_only=not return_attention)
        if return_attention:
            return out["w"], losses, out["attention"][:, :, -1, :]
        return out["w"], losses
