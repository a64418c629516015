"""What the in-context module adds to a backbone under safe fusion (``ict.fusion: residual``): the size of its term.

With safe fusion the served logit is ``backbone(x) + head(w)``; with ``ict.freeze_backbone`` the backbone is the
trained base model itself, so ``head(w)`` is everything the module contributes. This reads the trained models of a
``bench_variants.py`` run directory and, for every residual variant and seed, scores the same sampled validation
rows through the online scorer (``llmcf.serve.scorer.Scorer``, the path a served model takes) while recording both
terms: the head's mean and standard deviation across rows against the backbone logit's standard deviation. A head
whose std is a small fraction of the backbone's only shifts every score by a constant — it cannot change a ranking or
the AUC; a head that varies with the row is where the module moves predictions. The last column is how much the
ICT's output vector ``w`` varies across the rows (its per-dimension std, averaged), for a freshly initialised ICT of
the same config and for the trained one: a module that learned nothing row-specific collapses towards a constant.

    python benchmarks/residual_probe.py --run-dir ../runs/12/frozen-a --model DCN --name ml-100k-DCN-frozen

Appends a section to ``benchmarks/results/residual-probe.md`` (command, machine, date, one row per variant and seed).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, ram_suffix  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def probe(variant_dir: Path, tag: str, seed: int, rows: pd.DataFrame) -> dict:
    """Head and backbone terms of the logit over ``rows`` for one trained seed."""
    import json

    from llmcf.serve.scorer import Scorer

    scorer = Scorer.load(variant_dir, tag, seed=seed)
    model = scorer.model
    if getattr(model, "fusion", None) != "residual":
        raise SystemExit(f"{variant_dir}/models/{tag}: not a safe-fusion (ict.fusion: residual) model")
    heads, logits, ws = [], [], []

    def on_head(module, inputs, output) -> None:  # a forward hook that returns None leaves the output alone
        heads.append(output.detach().squeeze(-1))
        ws.append(inputs[0].detach())

    hooks = [model.ict_head.register_forward_hook(on_head),
             model.backbone.register_forward_hook(lambda m, i, o: logits.append(o["logit"].detach()) and None)]

    def score() -> np.ndarray:
        return scorer.score_rows(rows.user_id.tolist(), [list(h) for h in rows.history], rows.item_id.tolist(),
                                 rows.pos.to_numpy(), logits=True)

    try:
        served = score()
        head, base, w = (torch.cat(x).numpy() for x in (heads, logits, ws))
        if not np.allclose(head + base, served, atol=1e-4):  # the two terms read are the whole served logit
            raise SystemExit(f"{variant_dir}/models/{tag}: head + backbone differ from the served logit")
        # the same rows through a freshly initialised ICT of the same config (torch seed = the seed): how much
        # its output varies from row to row before training, against after
        from llmcf.models.llmcf_model import build_ict

        trained = model.ict
        torch.manual_seed(seed)
        model.ict = build_ict(scorer.schema, trained.item_text, scorer.context.cot_dim, scorer.cfg.ict,
                              scorer.context.cot_gaps).eval()
        model.ict.cache_examples(scorer.context.all_rows())  # as the loader prepares a served ICT
        ws.clear()
        score()
        w_init = torch.cat(ws).numpy()
        model.ict = trained
    finally:
        for h in hooks:
            h.remove()
    result = json.loads((variant_dir / "models" / tag / f"seed_{seed}" / "result.json").read_text())
    return {"seed": seed, "best_epoch": result["best_epoch"], "head_mean": float(head.mean()),
            "head_std": float(head.std()), "backbone_std": float(base.std()),
            "corr": float(np.corrcoef(head, base)[0, 1]) if head.std() > 0 else float("nan"),
            "w_std": float(w.std(0).mean()), "w_std_init": float(w_init.std(0).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a bench_variants.py --run-dir")
    ap.add_argument("--model", default="DIN")
    ap.add_argument("--name", required=True, help="section title in residual-probe.md")
    ap.add_argument("--rows", type=int, default=2000, help="validation rows sampled (seed 0)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from llmcf.config import load_config

    torch.set_num_threads(args.threads)
    root = args.run_dir / "variants"
    valid = pd.read_parquet(args.run_dir / "data" / "valid.parquet")
    rows = valid.sample(n=min(args.rows, len(valid)), random_state=0)
    table = []
    for vdir in sorted(p for p in root.iterdir() if p.is_dir()):
        for tdir in sorted((vdir / "models").glob(f"{args.model}+llmcf*")):
            if not (tdir / "config.yaml").exists() or load_config(tdir / "config.yaml").ict.fusion != "residual":
                continue
            for sdir in sorted(tdir.glob("seed_*")):
                if (sdir / "model.safetensors").exists():
                    r = probe(vdir, tdir.name, int(sdir.name.split("_")[1]), rows)
                    table.append({"variant": vdir.name, **r})
                    print(f"{vdir.name} seed {r['seed']}: head mean {r['head_mean']:+.4f} std {r['head_std']:.5f} "
                          f"(backbone logit std {r['backbone_std']:.3f})", flush=True)
    if not table:
        raise SystemExit(f"{root}: no trained {args.model} safe-fusion model")
    now = dt.datetime.now(dt.timezone.utc)
    cmd = "python benchmarks/residual_probe.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [f"## {args.name} ({now:%Y-%m-%d %H:%M} UTC)", "",
             f"- command: `{cmd}`",
             f"- machine: {cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, torch {torch.__version__}",
             f"- rows: {len(rows)} validation rows sampled (seed 0), scored through the online scorer", "",
             "| variant | seed | best epoch | head mean | head std | backbone logit std | head std / backbone std "
             "| corr(head, backbone) | ICT output std, at init → trained |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['variant']} | {r['seed']} | {r['best_epoch']} | {r['head_mean']:+.4f} | "
                     f"{r['head_std']:.5f} | {r['backbone_std']:.3f} | {r['head_std'] / r['backbone_std']:.4f} | "
                     f"{r['corr']:+.2f} | {r['w_std_init']:.4f} → {r['w_std']:.4f} |")
    out = RESULTS / "residual-probe.md"
    old = out.read_text() if out.exists() else ("# The in-context term under safe fusion\n\nWritten by "
                                                "`benchmarks/residual_probe.py` (its docstring says what it measures)."
                                                "\n\n")
    from llmcf.io import atomic_write_text

    atomic_write_text(out, old + "\n".join(lines) + "\n\n")
    print("\n".join(lines[-len(table) - 2:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
