"""A tiny synthetic training config for the tests that run the epoch loop."""

from kdef_jax.config import base_config


def tiny_config(tmp_path, **over):
    """3,000 / 700 / 700 synthetic rows, K=3 MLPs [16, 16], batch 512, 2 epochs, quiet; ``over``:
    {"dotted.key": value} changes (cache under ``tmp_path/cache``)."""
    c = base_config()
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.synthetic.num_train, c.data.synthetic.num_valid, c.data.synthetic.num_test = 3000, 700, 700
    c.data.name = "synthetic_test"
    c.model.hidden_units = (16, 16)
    c.model.num_students = 3
    c.train.batch_size = 512
    c.train.num_epochs = 2
    c.train.progress = False
    c.train.plot = False
    c.train.log_every = 1
    for k, v in over.items():
        node = c
        *path, leaf = k.split(".")
        for p in path:
            node = node[p]
        node[leaf] = v
    return c
