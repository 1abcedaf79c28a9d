"""KDEF on Frappe (libFM files from BARS Frappe_x1), the reference's small-data settings.

    python -m kdef_jax.main --config configs/frappe.py --workdir runs/frappe --config.model.num_students=6
    python -m kdef_jax.main --config configs/frappe.py --workdir runs/frappe_mlp \
        --config.model.num_students=1 --config.loss.variant=independent         # plain MLP baseline
    python -m kdef_jax.main --config configs/frappe.py:tiny --workdir runs/frappe_tiny   # smoke test
    python -m kdef_jax.main --config configs/frappe.py:bars --workdir runs/frappe_x1 \
        --config.data.data_dir=/data/Frappe_x1                                         # BARS CSV splits

Data: $KDEF_DATA_DIR/frappe (KDEF_DATA_DIR defaults to ../shared/data; --config.data.data_dir=DIR
overrides). Split: test = frappe.test.libfm; row i of frappe.validation.libfm goes to validation if
i % 10 == 0, else to train (51,949 / 5,773 / 28,860 rows). 10 categorical fields, min_count 1.
Model: d=16, MLP [400,400,400] + BN, dropout 0.1, K=3, batch 4096, embedding L2 0.01, Adam 1e-3.
"""

from kdef_jax.config import base_config, use_ektf

FRAPPE_FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")


def get_config(arg: str | None = None):
    c = base_config()
    c.data.name = "frappe_mod10"
    c.data.format = "libfm"
    c.data.subdir = "frappe"
    c.data.files.train = "frappe.validation.libfm"
    c.data.files.test = "frappe.test.libfm"
    c.data.split = "mod"
    c.data.valid_mod = 10
    c.data.fields = FRAPPE_FIELDS
    c.data.min_count = 1
    use_ektf(c, embedding_l2=0.01, batch_size=4096)
    if arg == "bars":  # BARS Frappe_x1 CSV splits with a header (label,user,item,daytime,...)
        c.data.name = "frappe_x1"
        c.data.format = "delimited"
        c.data.subdir = "Frappe_x1"
        c.data.files.train, c.data.files.valid, c.data.files.test = "train.csv", "valid.csv", "test.csv"
        c.data.split = "files"
        c.data.header, c.data.delimiter = True, ","
    elif arg == "tiny":
        c.model.hidden_units = (32, 32)
        c.train.num_epochs = 2
        c.train.steps_per_epoch = 3
        c.train.progress = False
    elif arg:
        raise ValueError(f"configs/frappe.py: unknown argument {arg!r} (use :bars or :tiny)")
    return c
