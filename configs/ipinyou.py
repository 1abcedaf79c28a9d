"""KDEF on iPinYou: BARS iPinYou_x1 CSVs (the paper's setup) or the shared libFM sample with its feature index.

    python -m kdef_jax.main --config configs/ipinyou.py --workdir runs/ipinyou --config.data.data_dir=/data/iPinYou_x1
    python -m kdef_jax.main --config configs/ipinyou.py:sample --workdir runs/ipinyou_sample    # shared/data sample
    python -m kdef_jax.main --config configs/ipinyou.py:tiny --workdir runs/ipinyou_tiny

Default (iPinYou_x1_csv, spec §1.1/§5): train.csv / test.csv with a header, 16 categorical fields,
label ``click``, min_count 2; the reference's ``valid_data`` points to test.csv, so model selection
runs on the test set — kept here for parity (``data.files.valid = "test.csv"``).
Model: d=16, MLP [400,400,400] + BN, dropout 0.1, batch 4096, embedding L2 1e-3, K=3.
``:sample``: $KDEF_DATA_DIR/ipinyou_sample (advertiser 2997; libFM, one ``idx:1`` pair per field,
labels 1/0) decoded through ``featindex.fm.txt`` (``field:value<TAB>index``) so each token is the
field's raw value and a pair from the wrong field is an error; valid = rows i % 10 == 0 of
train.fm.txt, test = test.fm.txt; min_count 2. Only 50 test positives: a pipeline check.
"""

from kdef_jax.config import base_config, use_ektf

IPINYOU_FIELDS = ("weekday", "hour", "useragent", "IP", "region", "city", "adexchange", "domain", "slotid",
                  "slotwidth", "slotheight", "slotvisibility", "slotformat", "creative", "advertiser", "slotprice")


def get_config(arg: str | None = None):
    c = base_config()
    d = c.data
    d.name = "ipinyou_x1"
    d.format = "delimited"
    d.subdir = "iPinYou_x1"
    d.files.train, d.files.valid, d.files.test = "train.csv", "test.csv", "test.csv"
    d.header, d.delimiter = True, ","
    d.label_column = "click"
    d.fields = IPINYOU_FIELDS
    d.min_count = 2
    use_ektf(c, embedding_l2=1e-3, batch_size=4096)
    if arg in ("sample", "tiny"):
        d.name = "ipinyou_sample"
        d.format = "libfm"
        d.subdir = "ipinyou_sample"
        d.files.train, d.files.valid, d.files.test = "train.fm.txt", "", "test.fm.txt"
        d.header = False
        d.featindex = "featindex.fm.txt"
        d.split, d.valid_mod = "mod", 10
    if arg == "tiny":
        c.model.hidden_units = (32, 32)
        c.train.num_epochs = 1
        c.train.steps_per_epoch = 3
        c.train.progress = False
    elif arg not in (None, "", "sample"):
        raise ValueError(f"configs/ipinyou.py: unknown argument {arg!r} (use :sample or :tiny)")
    return c
