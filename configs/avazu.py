"""KDEF on Avazu: the raw Kaggle CSV (train, 40.4M rows) or the BARS Avazu_x4 CSV splits.

    python -m kdef_jax.main --config configs/avazu.py --workdir runs/avazu --config.data.data_dir=/data/avazu
    python -m kdef_jax.main --config configs/avazu.py:bars --workdir runs/avazu_x4 --config.data.data_dir=/data/Avazu_x4

Kaggle's download ``train.gz`` is read as it is (decompressed as it streams): add ``--config.data.files.train=train.gz``.

Raw layout (header): id, click, hour (YYMMDDHH), C1, banner_pos, site_id, site_domain,
site_category, app_id, app_domain, app_category, device_id, device_ip, device_model, device_type,
device_conn_type, C14..C21. ``id`` is dropped; ``hour`` becomes hour-of-day ("0".."23") and weekday
("0" = Sunday .. "6") and weekend ("1"/"0"), as FuxiCTR's Avazu convert_hour / convert_weekday /
convert_weekend; every other column is categorical. min_count 2 (BARS Avazu_x4_001). Raw: one
file drawn 8:1:1 at random (seeded); ``:bars``: train.csv / valid.csv / test.csv with the same columns.
Model as the reference's Criteo runs: d=16, [400,400,400] + BN, dropout 0.1, K=3, batch 10,000, emb L2 1e-5.
"""

from kdef_jax.config import base_config, use_ektf

RAW_CATEGORICAL = ("C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
                   "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
                   "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21")
DERIVED = ("hour_of_day", "weekday", "weekend")


def get_config(arg: str | None = None):
    c = base_config()
    d = c.data
    d.name = "avazu"
    d.format = "delimited"
    d.subdir = "avazu"
    d.files.train = "train"
    d.split = "random"
    d.split_fractions = (0.8, 0.1, 0.1)
    d.header, d.delimiter = True, ","
    d.label_column = "click"
    d.fields = RAW_CATEGORICAL + DERIVED
    d.field_options = {name: dict(source="hour", transform=name) for name in DERIVED}
    d.min_count = 2
    use_ektf(c, embedding_l2=1e-5, batch_size=10_000)
    if arg == "bars":
        d.name = "avazu_x4"
        d.subdir = "Avazu_x4"
        d.files.train, d.files.valid, d.files.test = "train.csv", "valid.csv", "test.csv"
        d.split = "files"
    elif arg:
        raise ValueError(f"configs/avazu.py: unknown argument {arg!r} (use :bars)")
    return c
