"""KDEF on the built-in synthetic dataset: runs on any machine, no download (~20-30 s on 2 CPU cores).

    python -m kdef_jax.main --config configs/default.py --workdir runs/default
    python -m kdef_jax.main --config configs/default.py:tiny --workdir runs/tiny      # seconds
    python -m kdef_jax.main --config configs/default.py:criteo --workdir runs/criteo_shape \
        --config.model.num_students=10                 # Criteo-shaped throughput check

16 categorical fields with Zipf ids, labels from a planted first-order + pairwise logistic model
(kdef_jax/data/synthetic.py); 100k/20k/20k rows. K=3 MLP students [256,256], KDEF loss.
``:criteo`` is the Criteo shape of the reference's EKTF_Criteo runs (39 fields, 910,747 embedding
rows, d=16, [400,400,400], batch 10,000, emb L2 1e-5) on 300k synthetic rows, one epoch: it reports
the training throughput (results.json ``train_samples_per_s``).
"""

from kdef_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.data.name = "synthetic_small"
    c.data.format = "synthetic"
    c.model.num_students = 3
    c.model.hidden_units = (256, 256)
    c.model.dropout = 0.1
    c.optim.embedding_l2 = 1e-4
    c.train.batch_size = 2048
    c.train.num_epochs = 20
    if arg == "tiny":
        c.data.name = "synthetic_tiny"
        c.data.synthetic.num_train, c.data.synthetic.num_valid, c.data.synthetic.num_test = 4000, 1000, 1000
        c.model.hidden_units = (32, 32)
        c.train.batch_size = 512
        c.train.num_epochs = 2
        c.train.progress = False
    elif arg == "criteo":
        c.data.name = "synthetic_criteo"
        c.data.synthetic.preset = "criteo"
        c.data.synthetic.num_train, c.data.synthetic.num_valid, c.data.synthetic.num_test = 300_000, 50_000, 50_000
        c.model.hidden_units = (400, 400, 400)
        c.optim.embedding_l2 = 1e-5
        c.train.batch_size = 10_000
        c.train.num_epochs = 1
    elif arg:
        raise ValueError(f"configs/default.py: unknown argument {arg!r} (use :tiny or :criteo)")
    return c
