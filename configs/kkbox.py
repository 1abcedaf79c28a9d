"""KDEF on KKBox (WSDM 2018 music recommendation) as BARS KKBox_x1, with the reference's KKBox settings.

    python -m kdef_jax.main --config configs/kkbox.py --workdir runs/kkbox --config.data.data_dir=/data/KKBox_x1

Data: train.csv / valid.csv / test.csv with a header (pandas-written, quoted where needed), label
``label``. 13 fields (spec §1.1): msno, song_id, source_system_tab, source_screen_name,
source_type, city, gender, registered_via, language (categorical); genre_ids and artist_name
(``|``-separated sequences, max_len 3, mean-pooled); isrc → its first two characters (country code,
missing → OOV); bd (age) → "" if missing or outside [1, 95], else buckets ≤10, ≤20, …, ≤60, >60
(FuxiCTR's KKBox extract_country_code / bucketize_age). min_count 10.
Model (EKTF KKBox): d=128, MLP [1000,1000,1000] + BN, dropout 0.1, K=10, batch 10,000, emb L2 5e-4.
"""

from kdef_jax.config import base_config, use_ektf

KKBOX_FIELDS = ("msno", "song_id", "source_system_tab", "source_screen_name", "source_type", "city", "gender",
                "registered_via", "language", "genre_ids", "artist_name", "isrc", "bd")


def get_config(arg: str | None = None):
    c = base_config()
    d = c.data
    d.name = "kkbox_x1"
    d.format = "delimited"
    d.subdir = "KKBox_x1"
    d.files.train, d.files.valid, d.files.test = "train.csv", "valid.csv", "test.csv"
    d.header, d.delimiter, d.quotechar = True, ",", '"'
    d.label_column = "label"
    d.fields = KKBOX_FIELDS
    d.field_options = {
        "genre_ids": dict(kind="sequence", max_len=3, splitter="|"),
        "artist_name": dict(kind="sequence", max_len=3, splitter="|"),
        "isrc": dict(transform="isrc_country"),
        "bd": dict(transform="kkbox_age"),
    }
    d.min_count = 10
    use_ektf(c, embedding_l2=5e-4, batch_size=10_000, num_students=10, embedding_dim=128, hidden_units=(1000, 1000, 1000))
    if arg:
        raise ValueError(f"configs/kkbox.py: unknown argument {arg!r}")
    return c
