"""Embedding collapse across a K sweep: the information abundance of the shared embedding tables.

    python experiments/collapse.py --workdir runs/frappe_scaling --out experiments/results/frappe_collapse.json

For every finished run ``<workdir>/<variant>_k<K>_seed<s>`` (experiments/scaling.py), loads the best
checkpoint and, per field f with V_f ≥ 2d rows, takes the singular values σ of its table E_f
(the PAD row left out) and the information abundance of Guo et al. (2023, "On the embedding
collapse when scaling up recommendation models"):

    IA(E_f) = ‖σ‖₁ / ‖σ‖_∞ ∈ [1, d]   (d: a full-rank spread spectrum; 1: every row on one line)

Writes per run the mean IA over those fields and each field's normalised spectrum σ/σ_max, a
Markdown table (IA against K per variant) and a PNG (IA against K; the largest field's spectra).
Not the paper's Eq. 3 "knowledge abundance" (a count of singular values above a threshold τ
whose value the paper does not give; spec §9.8): IA needs no threshold.
"""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdef_jax.models.embedding import field_offsets  # noqa: E402
from kdef_jax.report import pyplot, save_figure, tolerant_stdio  # noqa: E402
from run_seeds import analysis_main, best_marks, bold_if, finished_runs  # noqa: E402  (experiments/ is this script's folder)


def information_abundance(matrix: np.ndarray) -> tuple[float, np.ndarray]:
    """(‖σ‖₁/‖σ‖_∞, σ/σ_max) of ``matrix`` [n, d], in float64."""
    s = np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)
    if s.size == 0 or s[0] == 0:
        return 0.0, s
    return float(s.sum() / s[0]), s / s[0]


def table_abundance(table: np.ndarray, vocab_sizes, min_rows: int) -> dict:
    """{field index: (IA, normalised spectrum)} for every field with at least ``min_rows`` rows."""
    out = {}
    for f, (lo, v) in enumerate(zip(field_offsets(vocab_sizes), vocab_sizes)):
        if v >= min_rows:
            out[f] = information_abundance(table[lo + 1 : lo + v])  # row lo is the field's PAD row
    return out


def analyse_run(workdir: Path) -> dict:
    from kdef_jax.export import load_run

    _, variables, fmap, results = load_run(workdir)
    table = np.asarray(variables["params"]["embedding"]["table"])
    per_field = table_abundance(table, fmap.vocab_sizes, 2 * table.shape[1])
    if not per_field:
        raise ValueError(f"{workdir}: no field has the {2 * table.shape[1]} (2·embedding_dim) rows an "
                         f"information abundance needs (vocabulary sizes {list(fmap.vocab_sizes)})")
    names = [fmap.fields[f].name for f in per_field]
    return {
        "mean_ia": statistics.fmean(ia for ia, _ in per_field.values()),
        "fields": {n: {"ia": ia, "spectrum": s.tolist(), "rows": fmap.vocab_sizes[f] - 1}
                   for n, (f, (ia, s)) in zip(names, per_field.items())},
        "ensemble_test_auc": results["rows"][0].get("test_auc"),
        "dim": int(table.shape[1]),
    }


def collect(*workdirs, variants=None) -> dict:
    """{variant: {K: [per-seed analyse_run]}} over the finished runs under ``workdirs``
    (run_seeds.finished_runs: joined, only ``variants`` when given)."""
    return {v: {k: [analyse_run(d) | {"seed": seed} for seed, d in runs] for k, runs in ks.items()}
            for v, ks in finished_runs(*workdirs, variants=variants).items()}


def markdown(found: dict) -> str:
    """One row per variant and K; bold: the highest mean IA (the least collapsed tables) among the variants at each K."""
    by_k = {}
    for v, ks in found.items():
        for k, runs in ks.items():
            by_k.setdefault(k, []).append((v, statistics.fmean(r["mean_ia"] for r in runs)))
    best = {(v, k): flag for k, g in by_k.items() for (v, _), flag in zip(g, best_marks([ia for _, ia in g], 3))}
    lines = ["| variant | K | mean IA of the embedding tables (mean; per seed) | ensemble test AUC |", "|---|---:|---|---:|"]
    for v, ks in found.items():
        for k, runs in ks.items():
            ia = [r["mean_ia"] for r in runs]
            aucs = [r["ensemble_test_auc"] for r in runs if r["ensemble_test_auc"] is not None]  # None: no test split
            lines.append(f"| {v} | {k} | {bold_if(best[v, k], format(statistics.fmean(ia), '.3f'))} "
                         f"({' / '.join(f'{x:.3f}' for x in ia)}) | {f'{statistics.fmean(aucs):.4f}' if aucs else 'n/a'} |")
    if any(best.values()):
        lines += ["", "**bold**: the highest mean IA (the least collapsed embedding tables) of the variants at each K."]
    return "\n".join(lines)


def plot(found: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    # One sequential colour map per variant, darker for larger K, so the spectra read by variant and K.
    maps = {v: plt.get_cmap(m) for v, m in zip(found, itertools.cycle(("Blues", "Oranges", "Greens", "Purples", "Reds")))}
    for v, ks in found.items():
        a.plot(list(ks), [statistics.fmean(r["mean_ia"] for r in runs) for runs in ks.values()], marker="o", label=v, color=maps[v](0.75))
    a.set_xscale("log", base=2)
    all_ks = sorted({k for ks in found.values() for k in ks})
    a.set_xticks(all_ks, [str(k) for k in all_ks])
    a.set_xlabel("students K")
    a.set_ylabel("mean information abundance ‖σ‖₁/‖σ‖∞")
    a.legend(title="loss.variant")
    a.grid(alpha=0.3)
    first = next(iter(next(iter(found.values())).values()))[0]
    field = max(first["fields"], key=lambda n: first["fields"][n]["rows"])
    for v, ks in found.items():
        for j, (k, runs) in enumerate(ks.items()):
            shade = 0.35 + 0.65 * j / max(1, len(ks) - 1)
            b.plot(runs[0]["fields"][field]["spectrum"], label=f"{v} K={k}", color=maps[v](shade))
    b.set_yscale("log")
    b.set_xlabel("singular value index")
    b.set_ylabel("σ / σ_max")
    b.set_title(f"field {field!r}, first seed")
    b.legend(fontsize=7, ncol=2)
    save_figure(fig, path)
    return True


def main():
    analysis_main(__doc__, collect, markdown, plot, "collapse.py")


if __name__ == "__main__":
    tolerant_stdio()
    main()
