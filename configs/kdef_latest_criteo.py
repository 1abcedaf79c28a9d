"""KDEF_Latest (IPNN + FINAL + ECN, the reference's EKTF_L) on Criteo, the EKTF_L_Criteo_001 settings.

    python -m kdef_jax.main --config configs/kdef_latest_criteo.py --workdir runs/latest_criteo \
        --config.data.data_dir=/path/to/criteo          # holds train.txt (raw Kaggle DAC TSV)
    python -m kdef_jax.main --config configs/kdef_latest_criteo.py:sample --workdir runs/latest_criteo_sample
    python -m kdef_jax.main --config configs/kdef_latest_criteo.py:tiny --workdir runs/latest_criteo_tiny

Data: configs/criteo.py (⌊ln² v⌋ buckets for I1-I13, min_count 10, random 8:1:1 split).
Model (spec §5, log EKTF_L_Criteo_001_ae9caa93): d=16, students [IPNN, FINAL 1B + field gate, ECN]
in that order, hidden [400]×3 + BN, dropouts 0.1 / 0.1 / 0.1 (the _004 run used 0.1 / 0.2 / 0.1:
``--config.model.final.dropout=0.2``), 4 ECN cross layers (BN on), batch 4096, emb L2 1e-5, Adam 1e-3.
Parameters with the reference's vocabulary (910,747 rows): 17,051,091 = IPNN 870,001 + FINAL 824,761
+ ECN 784,377 + embeddings 14,571,952. ``:sample``/``:tiny`` are configs/criteo.py's smoke tests.
"""

from pathlib import Path

from kdef_jax.config import load_config_file, use_kdef_latest


def get_config(arg: str | None = None):
    if arg not in (None, "", "sample", "tiny"):
        raise ValueError(f"configs/kdef_latest_criteo.py: unknown argument {arg!r} (use :sample or :tiny)")
    c = load_config_file(str(Path(__file__).with_name("criteo.py")) + (f":{arg}" if arg else ""))
    use_kdef_latest(c, dropouts=(0.1, 0.1, 0.1), num_cross_layers=4)
    c.optim.embedding_l2 = 1e-5
    if not arg:
        c.train.batch_size = 4096
    return c
