"""KDEF_Latest (IPNN + FINAL + ECN, the reference's EKTF_L) on Frappe, the reference's small-data settings.

    python -m kdef_jax.main --config configs/kdef_latest_frappe.py --workdir runs/latest_frappe
    python -m kdef_jax.main --config configs/kdef_latest_frappe.py --workdir runs/latest_frappe_ipnn \
        --config.model.students=ipnn:1 --config.loss.variant=independent       # one student trained alone
    python -m kdef_jax.main --config configs/kdef_latest_frappe.py:tiny --workdir runs/latest_frappe_tiny
    python -m kdef_jax.main --config configs/kdef_latest_frappe.py:bars --workdir runs/latest_frappe_x1 \
        --config.data.data_dir=/data/Frappe_x1                  # BARS Frappe_x1 CSVs (configs/frappe.py:bars)
    python experiments/run_seeds.py --config configs/kdef_latest_frappe.py --workdir runs/latest_seeds \
        --setting latest --setting ipnn_alone model.students=ipnn:1 loss.variant=independent \
        --setting final_alone model.students=final:1 loss.variant=independent \
        --setting ecn_alone model.students=ecn:1 loss.variant=independent \
        --out experiments/results/frappe_kdef_latest.json

Data and split: configs/frappe.py (test = frappe.test.libfm; frappe.validation.libfm row i → valid iff
i % 10 == 0, else train). Model, as the authors' ML-1M EKTF_L runs (spec §5): d=16, students
[IPNN, FINAL 1B + field gate, ECN] in that order, hidden [400]×3 + BN shared by IPNN and FINAL,
dropouts IPNN 0.1 / FINAL 0.1 / ECN 0.3, 2 ECN cross layers (BN on), batch 4096, emb L2 0.01,
Adam 1e-3. Parameters 969,285 (IPNN 406,001, FINAL 452,111, ECN 26,405, embeddings 84,768).
"""

from pathlib import Path

from kdef_jax.config import load_config_file, use_kdef_latest


def get_config(arg: str | None = None):
    if arg not in (None, "", "tiny", "bars"):
        raise ValueError(f"configs/kdef_latest_frappe.py: unknown argument {arg!r} (use :tiny or :bars)")
    c = load_config_file(str(Path(__file__).with_name("frappe.py")) + (f":{arg}" if arg else ""))
    use_kdef_latest(c, dropouts=(0.1, 0.1, 0.3), num_cross_layers=2)
    c.optim.embedding_l2 = 0.01
    c.train.batch_size = 4096
    return c
