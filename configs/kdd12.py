"""KDEF on KDD Cup 2012 track 2 as BARS KDD12_x10, with the reference's KDD12 settings (spec §5).

    python -m kdef_jax.main --config configs/kdd12.py --workdir runs/kdd12 --config.data.data_dir=/data/KDD12_x10

Data: train.csv / valid.csv / test.csv with a header, label ``Click``. 13 fields: Depth, Position,
Impression bucketed by ⌊ln² v⌋ (v > 2, else int(v); spec §1.3), and 10 IDs (DisplayURL, AdID,
AdvertiserID, QueryID, KeywordID, TitleID, DescriptionID, UserID, Gender, Age) as categorical
tokens. min_count 10. (The reference read the IDs as floats, so its tokens are "123.0" where ours
are "123": the same vocabulary, a bijection of the names.)
Model (EKTF KDD12): d=16, MLP [400,400,400] + BN, dropout 0, K=5, batch 10,000, emb L2 1e-5.
"""

from kdef_jax.config import base_config, use_ektf

NUMERIC = ("Depth", "Position", "Impression")
IDS = ("DisplayURL", "AdID", "AdvertiserID", "QueryID", "KeywordID", "TitleID", "DescriptionID", "UserID", "Gender", "Age")


def get_config(arg: str | None = None):
    c = base_config()
    d = c.data
    d.name = "kdd12_x10"
    d.format = "delimited"
    d.subdir = "KDD12_x10"
    d.files.train, d.files.valid, d.files.test = "train.csv", "valid.csv", "test.csv"
    d.header, d.delimiter = True, ","
    d.label_column = "Click"
    d.fields = NUMERIC + IDS
    d.numeric_fields = NUMERIC
    d.min_count = 10
    use_ektf(c, embedding_l2=1e-5, batch_size=10_000, num_students=5, dropout=0.0)
    if arg:
        raise ValueError(f"configs/kdd12.py: unknown argument {arg!r}")
    return c
