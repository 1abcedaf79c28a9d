"""KDEF on BARS MovielensLatest_x1 (MovieLens tag data, user/item/tag → click), CSV splits with a header.

    python -m kdef_jax.main --config configs/movielens_latest.py --workdir runs/ml_latest \
        --config.data.data_dir=/data/MovielensLatest_x1

Data: train.csv / valid.csv / test.csv, columns label, user_id, item_id, tag_id (all categorical,
min_count 1; BARS' settings). Model: the reference's small-data settings (d=16, [400,400,400] + BN,
dropout 0.1, K=3, batch 4096, embedding L2 0.01).
"""

from kdef_jax.config import base_config, use_ektf


def get_config(arg: str | None = None):
    c = base_config()
    d = c.data
    d.name = "movielenslatest_x1"
    d.format = "delimited"
    d.subdir = "MovielensLatest_x1"
    d.files.train, d.files.valid, d.files.test = "train.csv", "valid.csv", "test.csv"
    d.header, d.delimiter = True, ","
    d.label_column = "label"
    d.fields = ("user_id", "item_id", "tag_id")
    d.min_count = 1
    use_ektf(c, embedding_l2=0.01, batch_size=4096)
    if arg:
        raise ValueError(f"configs/movielens_latest.py: unknown argument {arg!r}")
    return c
