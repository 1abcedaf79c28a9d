"""KDEF_Latest (IPNN + FINAL + ECN, the reference's EKTF_L) on MovieLens, the authors' ML-1M EKTF_L settings.

    python -m kdef_jax.main --config configs/kdef_latest_movielens.py --workdir runs/latest_ml100k
    python -m kdef_jax.main --config configs/kdef_latest_movielens.py:1m_bars --workdir runs/latest_ml1m \
        --config.data.data_dir=/data/ML_1M_7_x1       # the paper's ML-1M (BARS ML_1M_7_x1 CSVs)
    python -m kdef_jax.main --config configs/kdef_latest_movielens.py:tiny --workdir runs/latest_ml100k_tiny

Data: configs/movielens.py with the same argument (default: raw MovieLens-100K, GroupLens fold 1, as
shared/reference/bench/ml100k_to_csv.py; ``:1m``, ``:1m_bars``, ``:1m_sample``, ``:tiny`` as there).
Model (spec §5, log EKTF_L_ML_1M_003_ee4f310f): d=16, students [IPNN, FINAL 1B + field gate, ECN] in
that order, hidden [400]×3 + BN, dropouts 0.1 / 0.1 / 0.3, 2 ECN cross layers (BN on), batch 4096,
emb L2 0.01, Adam 1e-3. The authors' code on ML-100K fold 1 (reference-perf.md §5.5): test AUC
0.8643 / 0.8644 / 0.8623 for seeds 2024-2026. Parameters: ML-1M (7 fields, 9,751 rows) 959,983 as the
reference log; ML-100K (3,442 rows) 859,039 — the same dense part, 803,967.
"""

from pathlib import Path

from kdef_jax.config import load_config_file, use_kdef_latest


def get_config(arg: str | None = None):
    c = load_config_file(str(Path(__file__).with_name("movielens.py")) + (f":{arg}" if arg else ""))
    use_kdef_latest(c, dropouts=(0.1, 0.1, 0.3), num_cross_layers=2)
    c.optim.embedding_l2 = 0.01
    return c
