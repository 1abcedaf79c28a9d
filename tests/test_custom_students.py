"""Student kinds of the user's own: registered from their module, named by the config
(model.student_modules), trained beside the built-in kinds, and imported again from a run's config.json."""
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO_ROOT, load_config_module
from kdef_jax.config import apply_overrides, check_overrides_are_read, load_config_file, use_student_modules, validate
from kdef_jax.models import registry
from kdef_jax.models.ensemble import KDEFModel, groups_from_config

# const_t: every logit is its setting ``value``; fm_t: a factorization machine (its README example's shape)
STUDENTS_PY = '''
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.registry import register_student


class ConstStudent(nn.Module):
    value: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        bias = self.param("bias", nn.initializers.zeros, ())
        return jnp.full(emb.shape[:1], self.value, jnp.float32) + 0 * bias


class FMStudent(nn.Module):
    scale: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        e = emb.astype(self.dtype)
        linear = nn.Dense(1, dtype=self.dtype)(e.reshape(e.shape[0], -1))[:, 0]
        pairs = 0.5 * (jnp.square(e.sum(1)) - jnp.square(e).sum(1)).sum(-1)
        return (linear + self.scale * pairs).astype(jnp.float32)


register_student("const_t", ConstStudent, settings={"value": 0.0})
register_student("fm_t", FMStudent, settings={"scale": 1.0})
'''


@pytest.fixture(autouse=True, scope="module")
def _registry_restored():
  """The kinds these tests register are gone after them (test_students.py checks the built-in set)."""
  saved = {name: dict(getattr(registry, name)) for name in ("STUDENTS", "CUSTOM", "ORIGIN")}
  path = list(sys.path)
  yield
  for name, kinds in saved.items():
    getattr(registry, name).clear()
    getattr(registry, name).update(kinds)
  sys.path[:] = path


@pytest.fixture(scope="module")
def students_py(tmp_path_factory):
  path = tmp_path_factory.mktemp("students") / "my_students.py"
  path.write_text(STUDENTS_PY)
  return str(path)


def _config(students_py, students):
  c = load_config_module("default").get_config("tiny")
  assert use_student_modules(c, students_py) == ["const_t", "fm_t"]
  c.model.students = students
  return c


class _Ok(nn.Module):
  width: int = 2
  dtype: Any = jnp.float32

  def __call__(self, emb, train=False, mask=None):
    return emb[:, 0, 0]


class _NoMask(nn.Module):
  dtype: Any = jnp.float32

  def __call__(self, emb, train=False):
    return emb[:, 0, 0]


class _NoDtype(nn.Module):
  def __call__(self, emb, train=False, mask=None):
    return emb[:, 0, 0]


@pytest.mark.parametrize("kind,cls,settings,error", [
    ("My-Kind", _Ok, None, "student kind 'My-Kind': a name of lowercase letters, digits and _ starting with a letter"),
    ("ok_t", dict, None, "student kind 'ok_t': <class 'dict'> is not a flax.linen Module class"),
    ("ok_t", _NoDtype, None, "student kind 'ok_t': _NoDtype needs a dtype field (the model's compute dtype"),
    ("ok_t", _Ok, {"depth": 1}, "student kind 'ok_t': setting 'depth' is not a field of _Ok of its own (width)"),
    ("ok_t", _Ok, {"width": [1, 2]}, "student kind 'ok_t': setting width=[1, 2]: a config value is a bool"),
    ("mlp", _Ok, None, f"student kind 'mlp' is registered already (MLPStudent of {REPO_ROOT}/kdef_jax/models/students/mlp.py)"),
    ("ensemble", _Ok, None, "student kind 'ensemble': a name of lowercase letters, digits and _ starting with a letter, not"),
    ("mlp_1", _Ok, None, "student kind 'mlp_1': a name of lowercase letters, digits and _ starting with a letter, not"),
    ("ok_t", _NoMask, None, "student kind 'ok_t': _NoMask.__call__ must take (emb, train, mask), e.g. def __call__(self"),
    ("ipnn", _Ok, None, "student kind 'ipnn': model.ipnn is a config key already"),
    ("dropout", _Ok, None, "student kind 'dropout': model.dropout is a config key already"),
])
def test_register_student_refuses_what_a_run_could_not_use(kind, cls, settings, error):
  with pytest.raises((ValueError, TypeError)) as e:
    registry.register_student(kind, cls, settings)
  assert str(e.value).startswith(error)
  assert "ok_t" not in registry.STUDENTS


def test_the_same_file_imported_twice_registers_once_and_another_files_class_is_refused(students_py):
  registry.import_student_modules([students_py])
  first = registry.STUDENTS["fm_t"]
  registry.import_student_modules([students_py, os.path.join(os.path.dirname(students_py), ".", "my_students.py")])
  assert registry.STUDENTS["fm_t"] is first
  with pytest.raises(ValueError) as e:
    registry.register_student("fm_t", _Ok)  # another file's class under a taken name
  assert str(e.value) == f"student kind 'fm_t' is registered already (FMStudent of {students_py}); choose another name"


def test_a_custom_kind_computes_its_logits_with_its_settings_beside_the_built_in_ones(students_py):
  c = _config(students_py, "mlp:1,const_t:2,fm_t:1")
  c.model.const_t.value = 0.25
  validate(c)
  groups = groups_from_config(c.model)
  assert [(g.kind, g.count, dict(g.kwargs)) for g in groups][1:] == [("const_t", 2, {"value": 0.25}), ("fm_t", 1, {"scale": 1.0})]
  model = KDEFModel(vocab_sizes=(5, 7), groups=groups, embedding_dim=4, embedding_init_std=0.1)
  ids = jnp.array([[1, 2], [3, 4], [0, 6]], jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), ids)
  logits = model.apply(variables, ids)
  assert logits.shape == (4, 3)
  np.testing.assert_array_equal(logits[1:3], 0.25)
  # fm_t: Linear(flat E) + ½ Σ_k [(Σ_f e_fk)² − Σ_f e_fk²], by hand from the model's own table (field 2's
  # rows follow field 1's 5)
  p = variables["params"]
  e = np.asarray(p["embedding"]["table"])[np.asarray(ids) + np.array([0, 5])]
  dense = p["group2_fm_t"]["Dense_0"]
  linear = e.reshape(3, -1) @ np.asarray(dense["kernel"])[0, :, 0] + np.asarray(dense["bias"])[0, 0]
  pairs = 0.5 * (np.square(e.sum(1)) - np.square(e).sum(1)).sum(-1)
  np.testing.assert_allclose(logits[3], linear + pairs, rtol=1e-5, atol=1e-7)


def test_a_custom_setting_is_a_config_key_and_an_override_no_student_reads_is_refused(students_py):
  c = _config(students_py, "mlp:2,fm_t:1")
  base = c.copy_and_resolve_references()
  apply_overrides(c, ["model.fm_t.scale=0.5"])
  check_overrides_are_read(c, base)
  assert dict(groups_from_config(c.model)[1].kwargs) == {"scale": 0.5}
  c.model.fm_t.scal = 1.0
  with pytest.raises(ValueError, match=r"config model.fm_t.scal: is not a config key \(did you mean 'model.fm_t.scale'\?"):
    validate(c)
  c.model.fm_t = ml_collections.ConfigDict({"scale": "big"})  # e.g. an edited config.json
  with pytest.raises(ValueError, match=r"config model.fm_t.scale: must be a number"):
    validate(c)
  c = _config(students_py, "mlp:2")
  base = c.copy_and_resolve_references()
  apply_overrides(c, ["model.fm_t.scale=0.5"])
  with pytest.raises(ValueError, match=r"config model.fm_t.scale=0.5 is not read: no student of 'mlp:2' uses it"):
    check_overrides_are_read(c, base)


def test_a_module_that_cannot_be_imported_is_a_config_error_naming_it(tmp_path):
  c = load_config_module("default").get_config("tiny")
  missing = str(tmp_path / "none.py")
  c.model.student_modules = (missing,)
  with pytest.raises(ValueError) as e:
    validate(c)
  assert str(e.value) == f"config model.student_modules: importing {missing!r} failed (FileNotFoundError: no such file {missing})"
  c.model.student_modules = ("no_such_students_pkg",)
  with pytest.raises(ValueError) as e:
    validate(c)
  assert str(e.value) == ("config model.student_modules: importing 'no_such_students_pkg' failed (ModuleNotFoundError: No "
                          "module named 'no_such_students_pkg'); a module name is looked up on sys.path: put its folder on "
                          "PYTHONPATH, or name the path of its .py file")
  c.model.student_modules = ("(my_students,)",)  # an unquoted tuple on the command line: absl keeps it one string
  with pytest.raises(ValueError, match=r"config model.student_modules: '\(my_students,\)' is neither a .py path nor a "
                                       r"module name; on the command line give one --config.model.student_modules=NAME"):
    validate(c)
  c.model.student_modules, c.model.students = (), "mlp:1,gru_t:2"
  with pytest.raises(ValueError, match=r"config model.students: unknown student kind 'gru_t'; registered: .*"
                                       r"\(a kind of your own: kdef_jax.models.registry.register_student"):
    validate(c)


def test_a_relative_path_is_relative_to_the_config_file(students_py, tmp_path, monkeypatch):
  folder = os.path.dirname(students_py)
  cfg = os.path.join(folder, "my_config.py")
  with open(cfg, "w") as f:
    f.write(textwrap.dedent('''
        from kdef_jax.config import base_config, use_student_modules

        def get_config():
            c = base_config()
            use_student_modules(c, "my_students.py")
            c.model.students = "mlp:2,fm_t:1"
            return c
        '''))
  monkeypatch.chdir(tmp_path)  # elsewhere
  c = load_config_file(cfg)
  assert list(c.model.student_modules) == [students_py] and c.model.fm_t.scale == 1.0


def test_a_run_with_custom_students_trains_and_is_rebuilt_from_its_config_json(students_py, tmp_path, no_home_cache):
  """Trained beside MLPs in this process; exported by a fresh process (which imports the module again
  from config.json's model.student_modules) from another folder: the served file gives the run's predictions."""
  from kdef_jax.train import train_and_evaluate

  c = _config(students_py, "mlp:2,fm_t:1")
  c.train.num_epochs = 1
  res = train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
  assert [r["model"] for r in res["rows"]][1:] == ["mlp_0", "mlp_1", "fm_t"]
  assert 0.5 < res["rows"][3]["test_auc"] < 1  # the FM learned from the data
  saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
  assert saved["student_modules"] == [students_py] and saved["fm_t"] == {"scale": 1.0}
  out = subprocess.run([sys.executable, "-m", "kdef_jax.export_run", "--workdir", str(tmp_path / "run"), "--out",
                        str(tmp_path / "served")], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert out.returncode == 0, out.stderr
  assert "reloaded file vs model on 256 random rows" in out.stdout + out.stderr


# Found by a review of kinds of the user's own (2026-12-08); each failed on the first version.
def test_a_student_module_imports_the_files_beside_it_from_anywhere(tmp_path, monkeypatch):
  lib = tmp_path / "lib"
  lib.mkdir()
  (lib / "nb_helpers_t.py").write_text("def twice(x):\n    return 2 * x\n")
  (lib / "nb_students_t.py").write_text(STUDENTS_PY.replace('"const_t"', '"nb_const_t"').replace('"fm_t"', '"nb_fm_t"')
                                        .replace("from typing import Any\n", "from typing import Any\nfrom nb_helpers_t import twice\n"))
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, "path", list(sys.path))
  c = load_config_module("default").get_config("tiny")
  assert use_student_modules(c, str(lib / "nb_students_t.py")) == ["nb_const_t", "nb_fm_t"]


def test_a_module_registering_a_class_of_another_module_gets_its_section_when_imported_before(tmp_path, monkeypatch):
  (tmp_path / "reg_layers_t.py").write_text(STUDENTS_PY.split("register_student(")[0].replace(
      "from kdef_jax.models.registry import register_student\n", ""))
  (tmp_path / "reg_students_t.py").write_text("from kdef_jax.models.registry import register_student\n"
                                             "from reg_layers_t import FMStudent\n\n"
                                             "register_student('rg_fm_t', FMStudent, settings={'scale': 1.0})\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  import importlib

  importlib.import_module("reg_students_t")
  c = load_config_module("default").get_config("tiny")
  assert use_student_modules(c, "reg_students_t") == ["rg_fm_t"] and c.model.rg_fm_t.scale == 1.0


def test_an_unreadable_student_code_record_is_a_warning(tmp_path):
  from kdef_jax.run_files import student_code_changes

  for text in ('{"/x.py": null}', "[1]", "{"):
    (tmp_path / "student_code.json").write_text(text)
    assert student_code_changes(tmp_path, ("/x.py",)) == [
        f"warning: {tmp_path / 'student_code.json'} is unreadable; the students' code cannot be checked against the run's"]


def test_a_package_imported_before_use_student_modules_still_gets_its_sections(tmp_path, monkeypatch):
  pkg = tmp_path / "pkg_students_t"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("from . import fm\n")
  (pkg / "fm.py").write_text(STUDENTS_PY.replace('"const_t"', '"pk_const_t"').replace('"fm_t"', '"pk_fm_t"'))
  monkeypatch.syspath_prepend(str(tmp_path))
  import importlib

  importlib.import_module("pkg_students_t")  # e.g. by the config file's own import line
  c = load_config_module("default").get_config("tiny")
  assert use_student_modules(c, "pkg_students_t") == ["pk_const_t", "pk_fm_t"]
  assert c.model.pk_fm_t.scale == 1.0


def test_student_modules_given_as_an_override_is_recorded_absolute_with_its_sections(students_py, tmp_path, monkeypatch):
  monkeypatch.chdir(os.path.dirname(students_py))
  c = load_config_module("default").get_config("tiny")
  apply_overrides(c, ["model.student_modules=('my_students.py',)", "model.students=mlp:1,fm_t:1", "model.fm_t.scale=0.5"])
  assert list(c.model.student_modules) == [students_py] and c.model.fm_t.scale == 0.5
  validate(c)


def test_a_student_that_returns_other_than_float_logits_per_row_is_named(students_py):
  class Column(nn.Module):  # [B, 1]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train=False, mask=None):
      return nn.Dense(1)(emb.reshape(emb.shape[0], -1))

  class Ints(nn.Module):
    dtype: Any = jnp.float32

    def __call__(self, emb, train=False, mask=None):
      return jnp.zeros(emb.shape[:1], jnp.int32)

  registry.register_student("column_t", Column)
  registry.register_student("ints_t", Ints)
  ids = jnp.array([[1, 2], [3, 4], [0, 6]], jnp.int32)
  for kind, got in (("column_t", "float32 of shape (3, 1)"), ("ints_t", "int32 of shape (3,)")):
    c = _config(students_py, f"mlp:1,{kind}:2")
    model = KDEFModel(vocab_sizes=(5, 7), groups=groups_from_config(c.model), embedding_dim=4)
    with pytest.raises(ValueError) as e:
      model.init(jax.random.PRNGKey(0), ids)
    assert str(e.value) == (f"student kind {kind!r} ({__name__}.{'Column' if kind == 'column_t' else 'Ints'}) returned {got} "
                            f"per student; a student returns float logits of shape [batch] = (3,)")


def test_fold_bn_leaves_a_kind_of_the_users_own_as_it_is(tmp_path):
  """Its BatchNorm after the ReLU would be folded into the Dense before it: wrong predictions (bf16: written)."""
  from kdef_jax.export import fold_batchnorm
  from kdef_jax.models.layers import BatchNorm

  class ReluThenBN(nn.Module):
    hidden_units: tuple = (8,)
    batch_norm: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train=False, mask=None):
      x = nn.relu(nn.Dense(8)(emb.reshape(emb.shape[0], -1)))
      if self.batch_norm:
        x = BatchNorm()(x, train, mask)
      return nn.Dense(1)(x)[:, 0]

  registry.register_student("relubn_t", ReluThenBN)
  c = load_config_module("default").get_config("tiny")
  c.model.students, c.model.hidden_units = "mlp:1,relubn_t:2", (8,)
  model = KDEFModel(vocab_sizes=(5, 7), groups=groups_from_config(c.model), embedding_dim=4)
  ids = jnp.array([[1, 2], [3, 4], [0, 6]], jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), ids)
  stats = jax.tree.map(lambda v: v + 0.3, variables["batch_stats"])  # statistics away from 0 / 1
  variables = {**variables, "batch_stats": stats}
  folded, fv = fold_batchnorm(model, variables)
  assert [dict(g.kwargs).get("batch_norm") for g in folded.groups] == [False, True]  # the MLP folded, relubn_t not
  np.testing.assert_allclose(folded.apply(fv, ids), model.apply(variables, ids), rtol=1e-5, atol=1e-6)


def test_a_student_file_changed_after_training_is_warned_of_on_resume_and_load(tmp_path, no_home_cache, capsys):
  from kdef_jax.export import load_run
  from kdef_jax.train import train_and_evaluate

  mine = tmp_path / "dg_students.py"
  mine.write_text(STUDENTS_PY.replace('"const_t"', '"dg_const_t"').replace('"fm_t"', '"dg_fm_t"'))
  c = load_config_module("default").get_config("tiny")
  use_student_modules(c, str(mine))
  c.model.students, c.train.num_epochs = "mlp:1,dg_fm_t:1", 1
  train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
  recorded = json.loads((tmp_path / "run" / "student_code.json").read_text())
  assert list(recorded) == [str(mine)] and len(recorded[str(mine)]) == 64
  load_run(tmp_path / "run")
  assert "warning" not in capsys.readouterr().err  # unchanged: nothing to say
  mine.write_text(mine.read_text() + "# edited\n")
  load_run(tmp_path / "run")
  err = capsys.readouterr().err
  assert err.startswith(f"warning: the code of {mine} changed since the run recorded it (sha256 {recorded[str(mine)][:12]} -> ")
  assert err.rstrip().endswith("its students are built from the code as it is now")
  told = []
  load_run(tmp_path / "run", warn=told.append)  # the caller's log instead (score_run passes its own)
  assert told == [err.rstrip()] and capsys.readouterr().err == ""
  said = []
  c.resume, c.train.num_epochs = True, 2
  train_and_evaluate(c, tmp_path / "run", log=lambda *a: said.append(" ".join(map(str, a))))
  assert any(s.startswith(f"[train] warning: the code of {mine} changed") for s in said), said
  assert json.loads((tmp_path / "run" / "student_code.json").read_text()) != recorded  # the code it goes on with


def test_the_command_line_overrides_a_section_that_its_student_modules_override_brings(students_py, tmp_path):
  """``--config.model.<kind>.*`` beside ``--config.model.student_modules``: absl knows only the config file's
  keys, so those overrides are taken out of its argv and applied once the module is imported."""
  from kdef_jax.main import split_config_overrides

  config = ["--config", f"{REPO_ROOT}/configs/default.py:tiny"]
  modules = f"--config.model.student_modules={students_py}"
  argv, later, problem = split_config_overrides([*config, modules, "--config.model.fm_t.scale", "0.5",
                                                 "--config.train.num_epochs=1", "--config.model.const_t.value=2"])
  assert problem is None and later == [("model.fm_t.scale", 0.5), ("model.const_t.value", 2.0)]
  assert argv == [*config, modules, "--config.train.num_epochs=1"]
  assert split_config_overrides([*config, "--config.model.student_modules", students_py, "--config.model.fm_t.scale=x"])[2] == (
      "flag --config.model.fm_t.scale=x: could not convert string to float: 'x'")  # absl's words, as for built-in keys
  assert split_config_overrides([*config, modules, "--config.model.fm_t.scale"])[2] == (
      "Missing value for flag --config.model.fm_t.scale")
  assert split_config_overrides([*config, modules, "--", "--config.model.fm_t.scale=1"])[2] == (
      "unexpected arguments after '--': ['--config.model.fm_t.scale=1'] (every setting is a --flag or --config.key=value)")
  assert split_config_overrides([*config, modules, "--config.model.fm_t.scal=1"])[2].startswith(
      "unknown config key 'model.fm_t.scal' (no 'scal' under model.fm_t; did you mean 'model.fm_t.scale'?")
  assert ("unknown config key 'model.fm_t.scale' (no 'fm_t' under model; a kind of your own has its section once "
          "model.student_modules names its module;") in split_config_overrides([*config, "--config.model.fm_t.scale=0.5"])[2]
  missing = str(tmp_path / "none.py")
  assert split_config_overrides([*config, f"--config.model.student_modules={missing}", "--config.model.fm_t.scale=1"])[2] == (
      f"config model.student_modules: importing {missing!r} failed (FileNotFoundError: no such file {missing})")

  def run(*overrides):
    return subprocess.run([sys.executable, "-m", "kdef_jax.main", *config, "--workdir", str(tmp_path / "run"), modules,
                           "--config.train.num_epochs=1", *overrides], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "KDEF_CACHE_DIR": str(tmp_path / "cache")})

  out = run("--config.model.students=mlp:1", "--config.model.fm_t.scale=0.5")
  assert out.returncode == 2 and "config model.fm_t.scale=0.5 is not read: no student of 'mlp:1' uses it" in out.stderr
  (tmp_path / "flags.txt").write_text("--config.model.students=mlp:1,fm_t:1\n--config.model.fm_t.scale=0.5\n")
  out = run("--flagfile", str(tmp_path / "flags.txt"))  # absl's flag file, expanded before the overrides are split
  assert out.returncode == 0, out.stderr
  saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
  assert saved["fm_t"] == {"scale": 0.5} and saved["student_modules"] == [students_py]


# Found by a review of kinds of the user's own (2026-12-08, second round); each failed on the code before.
def test_a_student_file_imports_the_helpers_beside_it_before_the_working_folders_and_records_their_code(tmp_path, monkeypatch):
  from kdef_jax.run_files import student_code_changes

  lib, cwd = tmp_path / "lib", tmp_path / "cwd"
  lib.mkdir(), cwd.mkdir()
  (lib / "sib_helpers_t.py").write_text("SCALE = 0.25\n")
  (cwd / "sib_helpers_t.py").write_text("SCALE = 0.0\n")  # the same name where the command runs
  (lib / "sib_students_t.py").write_text(STUDENTS_PY.replace('"const_t"', '"sb_const_t"').replace('"fm_t"', '"sb_fm_t"')
                                         .replace('"value": 0.0', '"value": SCALE')
                                         .replace("from typing import Any\n", "from typing import Any\nfrom sib_helpers_t import SCALE\n"))
  monkeypatch.chdir(cwd)
  monkeypatch.setattr(sys, "path", ["", *sys.path])  # the working folder first, as `python -m` has it
  c = load_config_module("default").get_config("tiny")
  use_student_modules(c, str(lib / "sib_students_t.py"))
  assert c.model.sb_const_t.value == 0.25  # lib/sib_helpers_t.py, not cwd's
  entry = str(lib / "sib_students_t.py")
  (tmp_path / "student_code.json").write_text(json.dumps(registry.code_digests([entry])))
  assert student_code_changes(tmp_path, [entry]) == []
  assert sys.path[-1] == str(lib) and str(lib) not in sys.path[:-1]  # last once imported: it shadows nothing later
  assert registry.helpers_of(entry) == {"sib_helpers_t": str(lib / "sib_helpers_t.py")}  # read from the code:
  (lib / "sib_helpers_t.py").write_text("SCALE = 0.5\n")  # the same digest whatever was imported before; edited:
  assert "changed since the run recorded it" in student_code_changes(tmp_path, [entry])[0]


def test_a_helper_name_imported_from_another_student_folder_already_is_an_error(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "path", list(sys.path))
  for folder, kind in (("a", "ca_t"), ("b", "cb_t")):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "clash_utils_t.py").write_text(f"NAME = {folder!r}\n")
    (tmp_path / folder / "students.py").write_text(STUDENTS_PY.split("register_student(")[0] + "import clash_utils_t\n\n"
                                                   f"register_student({kind!r}, ConstStudent, settings={{'value': 0.0}})\n")
  c = load_config_module("default").get_config("tiny")
  use_student_modules(c, str(tmp_path / "a" / "students.py"))
  with pytest.raises(ValueError, match=rf"{tmp_path / 'b' / 'students.py'} imports 'clash_utils_t', which is "
                                       rf"{tmp_path / 'b' / 'clash_utils_t.py'} beside it, but Python has imported "
                                       rf"'clash_utils_t' from {tmp_path / 'a' / 'clash_utils_t.py'} already"):
    use_student_modules(c, str(tmp_path / "b" / "students.py"))
  (tmp_path / "ck" / "kdef_jax").mkdir(parents=True)  # a student file in a checkout, the package installed from elsewhere
  (tmp_path / "ck" / "kdef_jax" / "__init__.py").write_text("")
  (tmp_path / "ck" / "students.py").write_text(STUDENTS_PY.split("register_student(")[0]
                                               + "register_student('ck_t', ConstStudent, settings={'value': 0.0})\n")
  monkeypatch.chdir(tmp_path)
  c = load_config_module("default").get_config("tiny")
  assert use_student_modules(c, str(tmp_path / "ck" / "students.py")) == ["ck_t"]
  (tmp_path / "link").symlink_to(tmp_path / "a")  # a's helper reached through a link: the same file, no clash
  (tmp_path / "a" / "more.py").write_text((tmp_path / "a" / "students.py").read_text().replace("ca_t", "cl_t"))
  assert use_student_modules(c, str(tmp_path / "link" / "more.py")) == ["cl_t"]


def test_a_kind_the_run_uses_must_come_from_a_module_that_student_modules_names(students_py, tmp_path):
  c = _config(students_py, "mlp:1,fm_t:1")
  validate(c)
  c.model.student_modules = ()  # the kind is registered in this process, but a resume or export_run would not know it
  with pytest.raises(ValueError, match=rf"config model.students: student kind 'fm_t' comes from {students_py}, which "
                                       r"model.student_modules \(\) does not name, so the run could not be rebuilt"):
    validate(c)


@pytest.fixture(scope="module")
def tuple_students_py(tmp_path_factory):
  path = tmp_path_factory.mktemp("tuple_students") / "tup_students_t.py"
  path.write_text(STUDENTS_PY.split("register_student(")[0] + textwrap.dedent('''
      class Tower(nn.Module):
          widths: tuple = (4,)
          names: tuple = ("a",)
          dtype: Any = jnp.float32

          @nn.compact
          def __call__(self, emb, train: bool = False, mask=None):
              return nn.Dense(1)(emb.reshape(emb.shape[0], -1))[:, 0]


      register_student("tup_t", Tower, settings={"widths": (4,), "names": ("a",)})
      '''))
  return str(path)


@pytest.mark.parametrize("value,ok", [((8, 4), True), ((8.5,), False), (("8",), False), ((True,), False), ((), True)])
def test_a_tuple_setting_holds_elements_of_its_defaults_type(tuple_students_py, value, ok):
  c = load_config_module("default").get_config("tiny")
  use_student_modules(c, tuple_students_py)
  c.model.students = "mlp:1,tup_t:1"
  c.model.tup_t.widths = value
  if ok:
    validate(c)
  else:
    with pytest.raises(ValueError, match=r"config model.tup_t.widths: must be a tuple of integer elements like its default "
                                         r"\(4,\), got"):
      validate(c)
  c.model.tup_t.widths, c.model.tup_t.names = (4,), ("", "user_")  # an empty name is a name
  validate(c)
  c.model.tup_t.names = ("(a,b)",)  # absl's reading of an unquoted --config...names=(a,b)
  with pytest.raises(ValueError, match=r"config model.tup_t.names: \('\(a,b\)',\): a name holds a bracket or a comma"):
    validate(c)
