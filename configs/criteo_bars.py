"""KDEF on Criteo as BARS/FuxiCTR CSV splits with a header (Criteo_x4, Criteo_x1), or the shared DeepCTR sample.

    python -m kdef_jax.main --config configs/criteo_bars.py --workdir runs/criteo_x4 --config.data.data_dir=/data/Criteo_x4
    python -m kdef_jax.main --config configs/criteo_bars.py:sample --workdir runs/criteo_csv_sample

Columns: label, I1..I13, C1..C26 (comma-separated, header). I-fields are bucketed by ⌊ln² v⌋
(values may be floats such as "260.0"), missing and bucket 0 → OOV (FuxiCTR 2.0.1 quirk),
min_count 10; hyperparameters as configs/criteo.py (EKTF_Criteo). ``:sample`` reads the 200-row
$KDEF_DATA_DIR/criteo_sample/criteo_sample.txt (DeepCTR example; same header), random 8:1:1 split,
min_count 1, small model: a parser/pipeline check.
"""

from kdef_jax.config import base_config, use_ektf

I_FIELDS = tuple(f"I{i}" for i in range(1, 14))
C_FIELDS = tuple(f"C{i}" for i in range(1, 27))


def get_config(arg: str | None = None):
    c = base_config()
    d = c.data
    d.name = "criteo_x4"
    d.format = "delimited"
    d.subdir = "Criteo_x4"
    d.files.train, d.files.valid, d.files.test = "train.csv", "valid.csv", "test.csv"
    d.header, d.delimiter = True, ","
    d.label_column = "label"
    d.fields = I_FIELDS + C_FIELDS
    d.numeric_fields = I_FIELDS
    d.min_count = 10
    use_ektf(c, embedding_l2=1e-5, batch_size=10_000)
    if arg == "sample":
        d.name = "criteo_csv_sample"
        d.subdir = "criteo_sample"
        d.files.train, d.files.valid, d.files.test = "criteo_sample.txt", "", ""
        d.split = "random"
        d.min_count = 1
        c.model.hidden_units = (32, 32)
        c.train.batch_size = 64
        c.train.num_epochs = 1
        c.train.progress = False
    elif arg:
        raise ValueError(f"configs/criteo_bars.py: unknown argument {arg!r} (use :sample)")
    return c
