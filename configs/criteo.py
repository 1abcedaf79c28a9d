"""KDEF on Criteo, raw Kaggle DAC TSV layout, with the reference's Criteo hyperparameters (spec §5).

    python -m kdef_jax.main --config configs/criteo.py --workdir runs/criteo \
        --config.data.data_dir=/path/to/criteo          # holds train.txt (45.8M rows)
    python -m kdef_jax.main --config configs/criteo.py:sample --workdir runs/criteo_sample
    python -m kdef_jax.main --config configs/criteo.py:tiny --workdir runs/criteo_tiny

Raw layout: no header; label, I1..I13 (integers, may be empty or negative), C1..C26 (hashed
strings, may be empty), TAB-separated. I-fields are bucketed by ⌊ln² v⌋ (v > 2) else int(v), with
missing → 0 and bucket 0 mapped to OOV (FuxiCTR 2.0.1 quirk, spec §1.2.6); min_count 10.
Split: one file drawn 8:1:1 at random (seeded), as BARS Criteo_x4.
Model (EKTF_Criteo): d=16, MLP [400,400,400] + BN, dropout 0.1, K=3, batch 10,000, emb L2 1e-5.
``:sample`` uses the 8,000-row Criteo sample in $KDEF_DATA_DIR/criteo_sample (its own
train/dev/test files, min_count 1, batch 1024): a pipeline smoke test, not a benchmark.
"""

from kdef_jax.config import base_config, use_ektf

I_FIELDS = tuple(f"I{i}" for i in range(1, 14))
C_FIELDS = tuple(f"C{i}" for i in range(1, 27))


def get_config(arg: str | None = None):
    c = base_config()
    c.data.name = "criteo"
    c.data.format = "delimited"
    c.data.subdir = "criteo"
    c.data.files.train = "train.txt"
    c.data.split = "random"
    c.data.split_fractions = (0.8, 0.1, 0.1)
    c.data.column_names = ("label",) + I_FIELDS + C_FIELDS
    c.data.label_column = "label"
    c.data.header = False
    c.data.delimiter = "\t"
    c.data.fields = I_FIELDS + C_FIELDS
    c.data.numeric_fields = I_FIELDS
    c.data.min_count = 10
    use_ektf(c, embedding_l2=1e-5, batch_size=10_000)
    if arg in ("sample", "tiny"):
        c.data.name = "criteo_sample"
        c.data.subdir = "criteo_sample"
        c.data.files.train, c.data.files.valid, c.data.files.test = "train.csv", "dev.csv", "test.csv"
        c.data.split = "files"
        c.data.min_count = 1
        c.train.batch_size = 1024
    if arg == "tiny":
        c.model.hidden_units = (32, 32)
        c.train.num_epochs = 2
        c.train.progress = False
    elif arg not in (None, "", "sample"):
        raise ValueError(f"configs/criteo.py: unknown argument {arg!r} (use :sample or :tiny)")
    return c
