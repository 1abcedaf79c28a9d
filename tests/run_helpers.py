"""A tiny synthetic training config for the tests that run the epoch loop, and a run's latest checkpoint."""

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


def latest_checkpoint(workdir):
    """(state, meta, epoch, {"latest": epoch, "best": epoch}) of the run in ``workdir``, restored into
    a template built from the run's own config.json and feature_map.json."""
    import jax

    from kdef_jax.checkpoint import Checkpoints
    from kdef_jax.data.feature_map import FeatureMap
    from kdef_jax.models.ensemble import build_model
    from kdef_jax.run_files import read_run_config
    from kdef_jax.steps import make_training

    config = read_run_config(workdir)
    fmap = FeatureMap.load(workdir / "feature_map.json")
    template, _ = make_training(build_model(config.model, fmap), config, jax.random.PRNGKey(0), fmap.num_columns)
    ck = Checkpoints(workdir, create=False)
    try:
        steps = ck.steps()
        state, meta, epoch = ck.restore_latest(template)
    finally:
        ck.close()
    return state, meta, epoch, steps
