"""Shared test helpers: locating the local real-data folder and loading config files by path."""
import importlib.util
import os
import pathlib

import jax
import pytest

from kdef_jax import runtime

runtime.tune_cpu_runtime()  # what every training process gets (kdef_jax.steps on import), before JAX starts

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Many tests build the same tiny models; a persistent compilation cache (keyed by the compiled
# program, so it can never serve a stale result) turns their repeated XLA compiles into lookups.
jax.config.update("jax_compilation_cache_dir", str(REPO_ROOT / ".cache" / "jax_test_compile"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def shared_data_dir() -> pathlib.Path:
  """$KDEF_DATA_DIR, else <repo>/../shared/data (may not exist: tests skip then)."""
  env = os.environ.get("KDEF_DATA_DIR")
  return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def load_config_module(name: str):
  """Import configs/<name>.py by path (the configs folder is not a package)."""
  path = REPO_ROOT / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"_kdef_test_configs_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def frappe_run_config(config_name: str, tmp_path):
  """configs/<config_name>.py on the shared Frappe files, quiet, cache in ``tmp_path``; skips if absent."""
  if not (shared_data_dir() / "frappe" / "frappe.test.libfm").exists():
    pytest.skip(f"Frappe files not found under {shared_data_dir() / 'frappe'} (set KDEF_DATA_DIR)")
  c = load_config_module(config_name).get_config()
  c.data.cache_dir = str(tmp_path / "cache")
  c.train.progress = False
  c.train.plot = False
  return c


@pytest.fixture
def no_home_cache(monkeypatch, tmp_path):
  """Point KDEF_CACHE_DIR at a temporary folder so nothing can land in ~/.cache."""
  d = tmp_path / "_env_cache"
  monkeypatch.setenv("KDEF_CACHE_DIR", str(d))
  return d


@pytest.fixture
def libfm_dir(tmp_path):
  """tmp_path/raw with the data tests' train.libfm and test.libfm (data_helpers.TRAIN_LIBFM, TEST_LIBFM)."""
  from data_helpers import write_libfm_dir

  return write_libfm_dir(tmp_path)


def pre_bn_bias(path, output_layer: str = "Dense_2") -> bool:
  """Whether a tree path is a Dense bias right before a BatchNorm (every Dense bias of an MLP tower
  but its ``output_layer``'s): its true gradient is 0 (BN subtracts it), so its float gradient is
  rounding noise that Adam's g/√v turns into ±lr steps on any device layout or reduction order."""
  keys = [str(getattr(k, "key", getattr(k, "name", ""))) for k in path]
  return bool(keys) and keys[-1] == "bias" and any(k.startswith("Dense_") for k in keys) and output_layer not in keys


def step_compiles(caplog, run):
  """(run(), {"train_step": n, "predict_step": m}): how many times ``run`` compiled each jitted step,
  from jax's compile log."""
  import logging

  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="jax._src.interpreters.pxla"), jax.log_compiles(True):
    out = run()
  names = [r.getMessage().split(" with ")[0] for r in caplog.records]
  return out, {n: names.count(f"Compiling jit({n})") for n in ("train_step", "predict_step")}
