"""The configuration schema (every key a config file may set) and its validation.

Config files in ``configs/`` start from ``base_config()`` and change values; the structure is fixed,
so ``--config.some.key=v`` for a key not listed here is an error that names the key.
"""

from __future__ import annotations

import ml_collections

from kdef_jax.losses import CONSISTENCIES, VARIANTS


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 2024  # init, dropout and shuffling all derive from it
    c.resume = False  # continue from workdir/checkpoints/latest

    c.data = ml_collections.ConfigDict()
    d = c.data
    d.name = "synthetic"  # dataset id (cache folder name, results)
    d.format = "synthetic"  # synthetic | libfm | delimited
    d.data_dir = ""  # "" → $KDEF_DATA_DIR/<subdir> ($KDEF_DATA_DIR defaults to ../shared/data)
    d.subdir = ""
    d.cache_dir = ""  # "" → $KDEF_CACHE_DIR or ~/.cache/kdef_jax
    d.files = ml_collections.ConfigDict({"train": "", "valid": "", "test": ""})
    d.split = "files"  # files | mod | random (see kdef_jax.data.preprocess.SourceSpec)
    d.valid_mod = 0
    d.split_fractions = (0.8, 0.1, 0.1)
    d.split_seed = 2018
    d.fields = ()  # feature columns, in model order
    d.numeric_fields = ()  # subset of fields bucketed by ⌊ln² v⌋ (Criteo I1-I13)
    d.min_count = 1
    d.column_names = ()  # delimited files without header: every raw column, in file order
    d.label_column = "label"
    d.header = False
    d.delimiter = "\t"
    d.on_bad_rows = "error"  # error | skip (skipped rows are counted and reported)
    d.synthetic = ml_collections.ConfigDict(
        {"preset": "small", "num_train": 100_000, "num_valid": 20_000, "num_test": 20_000, "seed": 2024, "positive_rate": 0.25}
    )

    c.model = ml_collections.ConfigDict()
    m = c.model
    m.embedding_dim = 16
    m.embedding_init_std = 1e-4
    m.num_students = 3
    m.student = "mlp"
    m.students = ""  # heterogeneous groups "kind:count,kind:count" (overrides student/num_students)
    m.hidden_units = (400, 400, 400)
    m.dropout = 0.1
    m.batch_norm = True
    m.dropout_rng = "hash"  # hash (counter-hash masks, fast) | jax (jax.random.bernoulli)
    m.compute_dtype = "float32"  # float32 | bfloat16 (params and optimizer state stay float32)

    c.loss = ml_collections.ConfigDict({"variant": "kdef", "consistency": "mse", "huber_delta": 1.0})

    c.optim = ml_collections.ConfigDict()
    o = c.optim
    o.learning_rate = 1e-3
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-8
    o.clip_norm = 10.0  # global-norm clipping (all parameters), 0 disables
    o.embedding_l2 = 0.01  # R = (λ/2)·‖E‖²_F over the whole table, added to the loss
    o.lr_decay = 0.1  # LR ×= lr_decay on every non-improving epoch
    o.min_lr = 1e-6
    o.patience = 2  # stop after this many consecutive non-improving epochs
    o.min_delta = 1e-6  # improvement threshold on the teacher's validation AUC

    c.train = ml_collections.ConfigDict()
    t = c.train
    t.batch_size = 4096
    t.eval_batch_size = 0  # 0 → batch_size
    t.num_epochs = 100
    t.steps_per_epoch = 0  # 0 → full epochs; > 0 truncates (smoke tests, throughput runs)
    t.log_every = 50  # steps between progress-bar loss updates (one host sync each)
    t.prefetch = 2  # batches prepared ahead in a background thread (0 = off)
    t.progress = True  # tqdm bars
    t.plot = True  # training curves PNG at the end (needs matplotlib)
    return c


def validate(c) -> None:
    """Raise ValueError naming the config key for any value the run cannot use."""

    def bad(key, msg):
        raise ValueError(f"config {key}: {msg}")

    m, o, t, d = c.model, c.optim, c.train, c.data
    if not m.students and (not isinstance(m.num_students, int) or m.num_students < 1):
        bad("model.num_students", f"must be an integer >= 1, got {m.num_students!r}")
    if c.loss.variant not in VARIANTS:
        bad("loss.variant", f"{c.loss.variant!r} is not one of {VARIANTS}")
    if c.loss.consistency not in CONSISTENCIES:
        bad("loss.consistency", f"{c.loss.consistency!r} is not one of {CONSISTENCIES}")
    if not 0.0 <= m.dropout < 1.0:
        bad("model.dropout", f"must be in [0, 1), got {m.dropout}")
    if m.dropout_rng not in ("hash", "jax"):
        bad("model.dropout_rng", f"{m.dropout_rng!r} is not one of hash, jax")
    if m.compute_dtype not in ("float32", "bfloat16"):
        bad("model.compute_dtype", f"{m.compute_dtype!r} is not one of float32, bfloat16")
    if m.embedding_dim < 1:
        bad("model.embedding_dim", f"must be >= 1, got {m.embedding_dim}")
    if any(u < 1 for u in m.hidden_units):
        bad("model.hidden_units", f"widths must be >= 1, got {tuple(m.hidden_units)}")
    if t.batch_size < 1:
        bad("train.batch_size", f"must be >= 1, got {t.batch_size}")
    if t.eval_batch_size < 0:
        bad("train.eval_batch_size", f"must be >= 0, got {t.eval_batch_size}")
    if t.num_epochs < 1:
        bad("train.num_epochs", f"must be >= 1, got {t.num_epochs}")
    if o.learning_rate <= 0:
        bad("optim.learning_rate", f"must be > 0, got {o.learning_rate}")
    if o.embedding_l2 < 0:
        bad("optim.embedding_l2", f"must be >= 0, got {o.embedding_l2}")
    if not 0 < o.lr_decay <= 1:
        bad("optim.lr_decay", f"must be in (0, 1], got {o.lr_decay}")
    if o.patience < 1:
        bad("optim.patience", f"must be >= 1, got {o.patience}")
    if d.split not in ("files", "mod", "random"):
        bad("data.split", f"{d.split!r} is not one of files, mod, random")
    if d.split == "mod" and d.valid_mod < 2:
        bad("data.valid_mod", f"split='mod' needs valid_mod >= 2, got {d.valid_mod}")
    if d.min_count < 1:
        bad("data.min_count", f"must be >= 1, got {d.min_count}")
