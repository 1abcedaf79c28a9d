"""KDEF_Latest (IPNN + FINAL + ECN, the reference's EKTF_L) on KDD12, KKBox and iPinYou, with the
authors' EKTF_L settings of each (spec §5). Criteo, MovieLens and Frappe have files of their own
(configs/kdef_latest_criteo.py, kdef_latest_movielens.py, kdef_latest_frappe.py).

    python -m kdef_jax.main --config configs/kdef_latest.py:kdd12 --workdir runs/latest_kdd12 \
        --config.data.data_dir=/data/KDD12_x10        # the BARS CSVs, as configs/kdd12.py
    python -m kdef_jax.main --config configs/kdef_latest.py:kkbox --workdir runs/latest_kkbox --config.data.data_dir=/data/KKBox_x1
    python -m kdef_jax.main --config configs/kdef_latest.py:ipinyou --workdir runs/latest_ipinyou --config.data.data_dir=/data/iPinYou_x1
    python -m kdef_jax.main --config configs/kdef_latest.py:ipinyou_sample --workdir runs/latest_ipinyou_sample

Data: the dataset's own config (``ipinyou_sample`` / ``ipinyou_tiny``: configs/ipinyou.py's ``:sample``
/ ``:tiny``, the shared iPinYou sample). Students in the order IPNN, FINAL 1B + field gate, ECN (BN on),
hidden units and embedding size of the dataset's config (KKBox: d=128, [1000]×3), Adam 1e-3, and:

| dataset | batch | dropouts IPNN / FINAL / ECN | ECN layers | emb L2 | log |
|---|---|---|---|---|---|
| KDD12 | 10,000 | 0 / 0 / 0 | 3 | 0 | EKTF_L_KDD12_002_78d5643e |
| KKBox | 10,000 | 0.1 / 0.1 / 0.2 | 3 | 5e-4 | EKTF_L_KKBox_001_b014d5c9 (24,999,951 parameters) |
| iPinYou | 4,096 | 0.3 / 0.2 / 0.2 | 3 | 1e-3 | EKTF_L_iPinYou_023_6b499688 |
"""

from pathlib import Path

from kdef_jax.config import load_config_file, use_kdef_latest

# dataset: (its config file[:arg], (IPNN, FINAL, ECN) dropouts, ECN cross layers, embedding L2, batch)
SETTINGS = {
    "kdd12": ("kdd12.py", (0.0, 0.0, 0.0), 3, 0.0, 10_000),
    "kkbox": ("kkbox.py", (0.1, 0.1, 0.2), 3, 5e-4, 10_000),
    "ipinyou": ("ipinyou.py", (0.3, 0.2, 0.2), 3, 1e-3, 4096),
    "ipinyou_sample": ("ipinyou.py:sample", (0.3, 0.2, 0.2), 3, 1e-3, 4096),
    "ipinyou_tiny": ("ipinyou.py:tiny", (0.3, 0.2, 0.2), 3, 1e-3, None),  # :tiny keeps its own small batch
}


def get_config(arg: str | None = None):
    if arg not in SETTINGS:
        raise ValueError(f"configs/kdef_latest.py: argument {arg!r}: use one of {', '.join(SETTINGS)} "
                         f"(Criteo, MovieLens, Frappe: configs/kdef_latest_<dataset>.py)")
    base, dropouts, layers, emb_l2, batch = SETTINGS[arg]
    c = load_config_file(str(Path(__file__).with_name(base)))
    use_kdef_latest(c, dropouts=dropouts, num_cross_layers=layers)
    c.optim.embedding_l2 = emb_l2
    if batch is not None:
        c.train.batch_size = batch
    return c
