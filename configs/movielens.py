"""KDEF on MovieLens: raw 100K (the second real benchmark), raw 1M, BARS ML-1M CSV, the shared ML-1M sample.

    python -m kdef_jax.main --config configs/movielens.py --workdir runs/ml100k            # KDEF K=3
    python -m kdef_jax.main --config configs/movielens.py --workdir runs/ml100k_mlp \
        --config.model.num_students=1 --config.loss.variant=independent                   # plain MLP
    python experiments/run_seeds.py --config configs/movielens.py --seeds 2024 2025 2026 \
        --setting kdef_k3 model.num_students=3 \
        --setting mlp_k1 model.num_students=1 loss.variant=independent \
        --workdir runs/ml100k_seeds --out experiments/results/ml100k_k3_vs_k1.json
    python -m kdef_jax.main --config configs/movielens.py:1m --workdir runs/ml1m --config.data.data_dir=/data/ml-1m
    python -m kdef_jax.main --config configs/movielens.py:1m_bars --workdir runs/ml1m_bars --config.data.data_dir=/data/ML_1M_7_x1
    python -m kdef_jax.main --config configs/movielens.py:1m_sample --workdir runs/ml1m_sample   # 200 rows: smoke test
    python -m kdef_jax.main --config configs/movielens.py:tiny --workdir runs/ml100k_tiny

``100k`` (default): raw GroupLens files in $KDEF_DATA_DIR/movielens_100k, fold 1, exactly as
shared/reference/bench/ml100k_to_csv.py: rows i of u1.base (0-based, file order, counted before any
row is dropped) go to valid if i % 10 == 0, else train; test = u1.test. Label: rating ≥ 4 → 1,
≤ 2 → 0, 3 dropped (AutoInt/BARS). Fields: user_id, item_id, age (raw years), gender, occupation,
zip (full string), genres (the item's u.genre names, a sequence, max_len 5, mean-pooled); min_count
1. Train 52,159 / valid 5,878 / test 14,818 rows; vocabularies 945 / 1,589 / 63 / 4 / 23 / 797 / 21.
Model = the reference's ML-1M settings: d=16, MLP [400,400,400] + BN, dropout 0.1, K=3, batch 4096,
embedding L2 0.01, Adam 1e-3.
``1m``: raw ML-1M (ratings.dat, users.dat, movies.dat; Latin-1, ``::``), random 8:1:1 split.
``1m_bars``: BARS ML_1M_7_x1 CSVs with header (train.csv/valid.csv/test.csv; 7 fields, Genres a
``^``-sequence of max_len 5). ``1m_sample``: the 200 joined ML-1M rows of
$KDEF_DATA_DIR/movielens_1m_meta/movielens_sample.txt (CSV with header, quoted titles, genres
``|``-separated), random 8:1:1 split — a parser/pipeline check, not a benchmark.
"""

from kdef_jax.config import base_config, use_ektf

ML_FIELDS = ("user_id", "item_id", "age", "gender", "occupation", "zip", "genres")


def get_config(arg: str | None = None):
    c = base_config()
    d = c.data
    d.name = "ml100k_u1"
    d.format = "movielens"
    d.movielens_variant = "100k"
    d.subdir = "movielens_100k"
    d.files.train, d.files.test = "u1.base", "u1.test"
    d.split = "mod"
    d.valid_mod = 10
    d.label_column = "rating"
    d.label_rule = "threshold:4:2"
    d.fields = ML_FIELDS
    d.field_options.genres = dict(kind="sequence", max_len=5, splitter="^")
    d.min_count = 1
    use_ektf(c, embedding_l2=0.01, batch_size=4096)
    if arg == "1m":
        d.name = "ml1m"
        d.movielens_variant = "1m"
        d.subdir = "ml-1m"
        d.files.train, d.files.test = "ratings.dat", ""
        d.split = "random"
        d.split_fractions = (0.8, 0.1, 0.1)
    elif arg == "1m_bars":
        d.name = "ml1m_bars"
        d.format = "delimited"
        d.subdir = "ML_1M_7_x1"
        d.files.train, d.files.valid, d.files.test = "train.csv", "valid.csv", "test.csv"
        d.split = "files"
        d.header, d.delimiter, d.quotechar = True, ",", '"'
        d.label_column, d.label_rule = "label", "binary"
        d.fields = ("UserID", "MovieID", "Gender", "Age", "Occupation", "Zipcode", "Genres")
        d.field_options = {"Genres": dict(kind="sequence", max_len=5, splitter="^")}
    elif arg == "1m_sample":
        d.name = "ml1m_sample"
        d.format = "delimited"
        d.subdir = "movielens_1m_meta"
        d.files.train, d.files.test = "movielens_sample.txt", ""
        d.split = "random"
        d.header, d.delimiter, d.quotechar = True, ",", '"'
        d.label_column, d.label_rule = "rating", "threshold:4:2"
        d.fields = ("user_id", "movie_id", "gender", "age", "occupation", "zip", "genres")
        d.field_options = {"genres": dict(kind="sequence", max_len=5, splitter="|")}
        c.train.batch_size = 64
    if arg in ("tiny", "1m_sample"):
        c.model.hidden_units = (32, 32)
        c.train.num_epochs = 1 if arg == "1m_sample" else 2
        c.train.progress = False
    if arg == "tiny":
        c.train.steps_per_epoch = 3
    elif arg not in (None, "", "1m", "1m_bars", "1m_sample"):
        raise ValueError(f"configs/movielens.py: unknown argument {arg!r} (use :1m, :1m_bars, :1m_sample or :tiny)")
    return c
