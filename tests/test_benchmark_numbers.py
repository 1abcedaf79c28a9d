"""The benchmarks' numbers: what each script times (the device work, every batch, the right variant)
and every number its JSON derives (FLOPs, ratios, medians, pairing). Cases from mutation testing of
benchmarks/ (2026-12-07: 96 mutants, 26 killed by the older tests, the other 70 by these).

No real timing: fake clocks, fake runners and monkeypatched builders; the few real programs are tiny."""
import argparse
import copy
import json
import math
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import common  # noqa: E402
import latency  # noqa: E402
import side_by_side  # noqa: E402
import table_update  # noqa: E402
import train_throughput  # noqa: E402


# ----------------------------------------------------------------------------------------- common.Runner


class _Device:
  """A fake asynchronous device: each call dispatches in ``host_s`` and queues ``device_s`` of work;
  ``block`` (standing in for jax.block_until_ready) waits for the results it is given."""

  def __init__(self, host_s=0.25, device_s=1.0):
    self.t, self.end, self.host_s, self.device_s, self.calls, self.blocked = 0.0, 0.0, host_s, device_s, [], []

  def clock(self):
    return self.t

  def dispatch(self, *args):
    self.calls.append(args)
    self.t += self.host_s
    self.end = max(self.end, self.t) + self.device_s
    return types.SimpleNamespace(ready_at=self.end, args=args)

  def block(self, x):
    self.blocked.append(x)
    for leaf in jax.tree_util.tree_leaves(x, is_leaf=lambda v: isinstance(v, types.SimpleNamespace)):
      if isinstance(leaf, types.SimpleNamespace):
        self.t = max(self.t, leaf.ready_at)
    return x


@pytest.fixture
def device(monkeypatch):
  dev = _Device()
  monkeypatch.setattr(common.time, "perf_counter", dev.clock)
  monkeypatch.setattr(common.jax, "block_until_ready", dev.block)
  return dev


def test_runner_times_the_device_work_of_every_call_it_makes(device):
  r = common.Runner(device.dispatch, [(1,), (2,), (3,)])
  assert r.run(3) == 0.25 + 3 * 1.0  # the first call's dispatch + the queued device work of all three
  assert [a for a, in device.calls] == [1, 2, 3]
  assert r.run(2) == 0.25 + 2 * 1.0
  assert [a for a, in device.calls] == [1, 2, 3, 1, 2]  # cycling through the batches, resumed where it was
  assert r.i == 5


def test_runner_with_a_carry_waits_for_the_carried_state_too(device):
  def step(carry, x):
    return device.dispatch(carry, x), None  # the step's second output is not an array

  r = common.Runner(step, [("a",), ("b",)], carry="s0")
  assert r.run(3) == 0.25 + 3 * 1.0
  assert [c[1] for c in device.calls] == ["a", "b", "a"]
  assert isinstance(device.calls[1][0], types.SimpleNamespace) and device.calls[1][0].args == ("s0", "a")  # carried


# ------------------------------------------------------------------------------ common.time_interleaved


class _FixedRunner:
  def __init__(self, per_call):
    self.per_call, self.calls = list(per_call), []

  def run(self, k):
    self.calls.append(k)
    return self.per_call.pop(0) * k


def test_time_interleaved_reports_the_median_not_the_mean():
  r = _FixedRunner([5.0, 1.0, 2.0, 9.0])
  (med, lo, hi), = common.time_interleaved([r], warmup=1, steps=1, rounds=3)
  assert (med, lo, hi) == (2.0, 1.0, 9.0)


def test_min_round_s_rounds_the_calls_per_round_up():
  r = _FixedRunner([1.0, 0.003] + [0.003] * 2)
  common.time_interleaved([r], warmup=2, steps=1, rounds=2, min_round_s=0.05)
  assert r.steps == 17 and 17 * 0.003 >= 0.05 > 16 * 0.003


def test_positive_int_rejects_zero():
  assert common.positive_int("1") == 1
  with pytest.raises(argparse.ArgumentTypeError):
    common.positive_int("0")


def test_criteo_batches_are_distinct_and_their_ids_within_each_vocabulary():
  vocab = (2, 3, 50)
  bs = common.criteo_batches(4000, n=3, vocab=vocab)
  assert not np.array_equal(bs[0]["ids"], bs[1]["ids"]) and not np.array_equal(bs[1]["ids"], bs[2]["ids"])
  ids = np.concatenate([b["ids"] for b in bs])
  assert (ids.max(0) == np.array(vocab) - 1).all() and ids.min() >= 0  # the heavy tail is clipped to the last id


def test_machine_records_the_device_and_the_software():
  assert set(common.machine()) >= {"platform", "device_kind", "device_count", "host", "cpu", "jax", "xla_flags"}


def test_write_json_echoes_strict_json(capsys):
  common.write_json(None, {"x": float("nan"), "y": 1.5}, echo=True)

  def no_constants(name):
    raise AssertionError(f"non-standard JSON constant {name}")

  assert json.loads(capsys.readouterr().out, parse_constant=no_constants) == {"x": None, "y": 1.5}


# ------------------------------------------------------------------------ FLOP count vs the GEMM program


def test_mlp_macs_and_the_gemm_ceiling_program_do_the_counted_work():
  dims = [len(common.CRITEO_VOCAB) * common.EMB_DIM, *common.HIDDEN, 1]
  assert dims[0] == 624 and common.MLP_MACS == sum(i * o for i, o in zip(dims[:-1], dims[1:])) == 570_000
  k, batch = 2, 8
  r = train_throughput.gemm_runner(k, batch)
  (args,) = r.args_list
  out = jax.eval_shape(r.fn, *args)
  assert len(out) == 3 * (len(dims) - 1)  # X·W, dY·Wᵀ, Xᵀ·dY of every layer
  flops = 0
  for eqn in jax.make_jaxpr(r.fn)(*args).jaxpr.eqns[0].params["jaxpr"].jaxpr.eqns:  # inside the jit
    if eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      flops += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
  assert flops == 6 * k * common.MLP_MACS * batch  # what train_throughput reports as mlp_gflop_per_step


def test_gemm_runner_uses_the_requested_dtype():
  (args,) = train_throughput.gemm_runner(1, 4, jnp.bfloat16).args_list
  assert {x.dtype for x in jax.tree_util.tree_leaves(args)} == {jnp.dtype(jnp.bfloat16)}


# --------------------------------------------------------------------------------- train_throughput.py


def test_step_runner_builds_the_requested_model_and_cycles_every_batch(monkeypatch):
  seen = {}
  monkeypatch.setattr(train_throughput, "create_train_state", lambda model, tx, key, n: seen.setdefault("state", ("state", n)))
  monkeypatch.setattr(train_throughput, "make_train_step", lambda model, *a: seen.setdefault("model", model) and "step")
  batches = [{"ids": np.full((2, 39), i, np.int32), "y": np.zeros(2, np.float32), "mask": np.ones(2, np.float32)}
             for i in range(3)]
  r = train_throughput.step_runner([common.mlp_group(2)], batches, "bfloat16", "vmap")
  assert seen["model"].compute_dtype == "bfloat16" and seen["model"].group_impl == "vmap"
  assert r.carry == ("state", 39)
  assert [int(np.asarray(b["ids"])[0, 0]) for b, _ in r.args_list] == [0, 1, 2]


def _tt_main(monkeypatch, argv, timings):
  """train_throughput.main on fake runners; ``timings``: per time_interleaved call, per runner (med, lo, hi)."""
  built, kws, written = [], [], []

  def fake_step_runner(groups, batches, compute_dtype="float32", group_impl="auto"):
    built.append(("step", tuple(groups), compute_dtype, group_impl))
    return types.SimpleNamespace()

  def fake_gemm_runner(k, batch, dtype=jnp.float32):
    built.append(("gemm", k, batch, dtype))
    return types.SimpleNamespace()

  def fake_time_interleaved(runners, **kw):
    t = timings[len(kws)]
    kws.append(kw)
    assert len(runners) == len(t)
    for i, r in enumerate(runners):
      r.first_call_s = 100.0 * (len(kws)) + i
    return t

  monkeypatch.setattr(train_throughput, "step_runner", fake_step_runner)
  monkeypatch.setattr(train_throughput, "gemm_runner", fake_gemm_runner)
  monkeypatch.setattr(train_throughput, "time_interleaved", fake_time_interleaved)
  monkeypatch.setattr(train_throughput, "criteo_batches", lambda *a, **k: ["batches"])
  monkeypatch.setattr(train_throughput, "machine", lambda: {})
  monkeypatch.setattr(train_throughput, "write_json", lambda path, rec, echo=True: written.append(copy.deepcopy(rec)))
  monkeypatch.setattr(sys, "argv", ["train_throughput.py", *argv])
  train_throughput.main()
  return built, kws, written


def test_k_sweep_rows_derive_every_number_from_that_ks_timings(monkeypatch):
  argv = ["--ks", "2", "1", "3", "--batch", "1000", "--variants", "group", "vmap", "loop", "gemm", "--loop-max-k", "2",
          "--dtype", "bfloat16", "--warmup", "3", "--steps", "4", "--rounds", "5"]
  t2 = [(0.5, 0.4, 0.6), (1.0, 0.9, 1.1), (1.5, 1.4, 1.6), (0.25, 0.2, 0.3)]  # group vmap loop gemm
  t1 = [(0.2, 0.1, 0.3), (0.4, 0.3, 0.5), (0.3, 0.2, 0.4), (0.1, 0.05, 0.15)]
  t3 = [(0.75, 0.7, 0.8), (0.9, 0.8, 1.0), (0.3, 0.2, 0.4)]  # loop skipped: K=3 > --loop-max-k
  built, kws, written = _tt_main(monkeypatch, argv, [t2, t1, t3])
  assert kws == [{"warmup": 3, "steps": 4, "rounds": 5}] * 3
  g = common.mlp_group
  assert built[:4] == [("step", (g(2),), "bfloat16", "auto"), ("step", (g(2),), "bfloat16", "vmap"),
                       ("step", (g(1), g(1)), "bfloat16", "auto"), ("gemm", 2, 1000, jnp.bfloat16)]
  rows = written[-1]["rows"]
  assert [r["K"] for r in rows] == [2, 1, 3] and "loop" in rows[1] and "loop" not in rows[2]
  r2 = rows[0]
  flop = 6 * 2 * common.MLP_MACS * 1000
  assert r2["mlp_gflop_per_step"] == flop / 1e9
  assert r2["group"] == {"step_s": 0.5, "step_s_min": 0.4, "step_s_max": 0.6, "samples_per_s": 1000 / 0.5,
                         "mlp_gflops": flop / 0.5 / 1e9, "first_call_s": 100.0}
  assert [r2[v]["first_call_s"] for v in ("group", "vmap", "loop", "gemm")] == [100.0, 101.0, 102.0, 103.0]
  assert r2["group_fraction_of_gemm_ceiling"] == 0.25 / 0.5
  assert r2["group_speedup_over_vmap"] == 1.0 / 0.5 and r2["group_speedup_over_loop"] == 1.5 / 0.5
  assert [r["time_ratio_vs_k1"] for r in rows] == [0.5 / 0.2, 1.0, 0.75 / 0.2]  # vs K=1 though K=2 ran first
  assert [r["flop_ratio_vs_k1"] for r in rows] == [2, 1, 3]


def test_students_row_gflops_from_mflop_per_sample(monkeypatch):
  argv = ["--students", "mlp:1", "--batch", "1000", "--mflop-per-sample", "2.0", "--warmup", "3", "--steps", "2"]
  built, kws, written = _tt_main(monkeypatch, argv, [[(0.5, 0.4, 0.6)]])
  (row,) = written[-1]["rows"]
  assert kws == [{"warmup": 3, "steps": 2, "rounds": 3}]
  assert row["samples_per_s"] == 2000.0 and row["gflops"] == pytest.approx(2.0e6 * 1000 / 0.5 / 1e9)


def test_a_child_process_parses_the_parents_settings(monkeypatch):
  args = argparse.Namespace(variants=["group", "vmap", "loop"], batch=10, dtype="bfloat16", loop_max_k=7,
                            warmup=4, steps=2, rounds=5)  # none of them the child's default
  argv = train_throughput._child_argv(args, 6, "/tmp/x.json", 1)

  class Parsed(Exception):
    pass

  def capture(ap, child_args, student_only, mlp_only):
    raise Parsed(vars(child_args))

  monkeypatch.setattr(train_throughput, "checked_spec_groups", capture)
  monkeypatch.setattr(sys, "argv", argv[1:])
  with pytest.raises(Parsed) as e:
    train_throughput.main()
  got = e.value.args[0]
  assert {k: got[k] for k in ("batch", "dtype", "loop_max_k", "warmup", "steps", "rounds", "out", "ks", "processes")} == {
      "batch": 10, "dtype": "bfloat16", "loop_max_k": 7, "warmup": 4, "steps": 2, "rounds": 5, "out": "/tmp/x.json",
      "ks": [6], "processes": 1}
  assert got["variants"] == ["vmap", "loop", "group"]


def test_processes_summary_pairs_every_ratio_within_its_process(monkeypatch):
  # (K, process) -> each variant's step_s; K=4 runs no loop (above --loop-max-k)
  step = {(1, 0): {"loop": 3.0, "group": 1.0, "vmap": 1.5}, (1, 1): {"loop": 2.0, "group": 2.0, "vmap": 2.0},
          (1, 2): {"loop": 10.0, "group": 4.0, "vmap": 6.0},
          (4, 0): {"group": 3.0, "vmap": 4.0}, (4, 1): {"group": 10.0, "vmap": 12.0}, (4, 2): {"group": 9.0, "vmap": 11.0}}
  calls, written = [], []

  def fake_run(argv, check, stdout):
    k = int(argv[argv.index("--ks") + 1])
    p = len([c for c in calls if c == k])
    calls.append(k)
    row = {"K": k, "mlp_gflop_per_step": 36.0, **{v: {"step_s": s} for v, s in step[k, p].items()}}
    with open(argv[argv.index("--out") + 1], "w") as fh:
      json.dump({"rows": [row]}, fh)

  monkeypatch.setattr(train_throughput.subprocess, "run", fake_run)
  monkeypatch.setattr(train_throughput, "machine", lambda: {})
  monkeypatch.setattr(train_throughput, "write_json", lambda path, rec, echo=True: written.append(copy.deepcopy(rec)))
  args = argparse.Namespace(ks=[1, 4], processes=3, variants=["loop", "group", "vmap"], batch=10, dtype="float32",
                            loop_max_k=2, warmup=1, steps=2, rounds=1, out=None)
  train_throughput.across_processes(args)
  assert [r["processes"] for r in written[0]["rows"]] == [1, 1]  # the JSON after round 1 claims one process
  k1, k4 = written[-1]["rows"]
  assert k1["processes"] == 3
  assert k1["group_speedup_over_loop_per_process"] == [3.0, 1.0, 2.5]
  assert k1["group_speedup_over_loop"] == 2.5  # the median of the per-process ratios, not median/median (1.5)
  assert k4["group"]["step_s"] == 9.0 and k4["group"]["step_s_per_process"] == [3.0, 10.0, 9.0]
  assert k4["group"]["mlp_gflops"] == 36.0 / 9.0 and k4["group"]["samples_per_s"] == 10 / 9.0
  assert k4["group_speedup_over_vmap_per_process"] == [4.0 / 3.0, 12.0 / 10.0, 11.0 / 9.0]
  assert k4["time_ratio_vs_k1_per_process"] == [3.0, 5.0, 2.25] and k4["time_ratio_vs_k1"] == 3.0
  assert "loop" not in k4 and k4["flop_ratio_vs_k1"] == 4


# ------------------------------------------------------------------------------------------ latency.py

_SMALL_VOCAB = (7, 5)


def _latency_main(monkeypatch, argv, ms):
  made, kws, written = [], [], []
  real_make_predictor = latency.make_predictor

  def make_predictor(model, variables, what="ensemble", fold_bn=False):
    made.append((what, fold_bn))
    return real_make_predictor(model, variables, what, fold_bn=fold_bn)

  def fake_time_interleaved(runners, **kw):
    kws.append(kw)
    for i, r in enumerate(runners):
      r.first_call_s, r.steps = 10.0 + i, 100 + i
    return [(m / 1e3, m / 2e3, m * 2 / 1e3) for m in ms]

  monkeypatch.setattr(latency, "criteo_model", lambda groups: common.criteo_model(groups, vocab=_SMALL_VOCAB))
  monkeypatch.setattr(latency, "criteo_batches", lambda b, n=4: common.criteo_batches(b, n, vocab=_SMALL_VOCAB))
  monkeypatch.setattr(latency, "mlp_group", lambda k: common.spec_groups(f"mlp:{k}", ["model.hidden_units=(8,)"])[0])
  monkeypatch.setattr(latency, "make_predictor", make_predictor)
  monkeypatch.setattr(latency, "time_interleaved", fake_time_interleaved)
  monkeypatch.setattr(latency, "machine", lambda: {})
  monkeypatch.setattr(latency, "write_json", lambda path, rec, echo=True: written.append(copy.deepcopy(rec)))
  monkeypatch.setattr(sys, "argv", ["latency.py", *argv])
  latency.main()
  return made, kws, written[-1]


def test_latency_rows_compare_the_fastest_student_with_its_own_kind_of_ensemble(monkeypatch):
  # ensemble, student_0..2, then the same folded
  ms = [10.0, 4.0, 2.0, 5.0, 8.0, 3.0, 6.0, 1.0]
  argv = ["--students", "mlp:3", "--set", "model.hidden_units=(8,)", "--batches", "4", "2000", "--steps", "8",
          "--rounds", "3", "--min-round-s", "0.07", "--fold-bn"]
  made, kws, rec = _latency_main(monkeypatch, argv, ms)
  assert rec["K"] == 3 and rec["students"] == "mlp:3"
  assert kws == [{"warmup": 2, "steps": 8, "rounds": 3, "min_round_s": 0.07},
                 {"warmup": 2, "steps": 3, "rounds": 3, "min_round_s": 0.07}]  # a big batch: max(3, steps // 4)
  row = rec["rows"][0]
  assert row["fastest_student"] == "student_1" and row["one_student_speedup"] == 10.0 / 2.0
  assert row["fastest_student_folded"] == "student_2_folded" and row["one_student_speedup_folded"] == 8.0 / 1.0
  names = ["ensemble", "student_0", "student_1", "student_2"]
  names += [n + "_folded" for n in names]
  for i, name in enumerate(names):
    assert row[name] == {"ms": ms[i], "ms_min": ms[i] / 2, "ms_max": ms[i] * 2, "samples_per_s": 4 / (ms[i] / 1e3),
                         "first_call_s": 10.0 + i, "calls_per_round": 100 + i}


def test_latency_folds_the_same_student_it_reports_unfolded(monkeypatch):
  made, _, rec = _latency_main(monkeypatch, ["--k", "2", "--batches", "4", "--fold-bn"], [3.0, 1.0, 2.0, 0.5])
  assert made == [("ensemble", False), (0, False), ("ensemble", True), (0, True)]
  assert rec["K"] == 2 and rec["rows"][0]["one_student_speedup_folded"] == 4.0


def test_write_hlo_counts_the_entry_computations_ops_only(tmp_path, monkeypatch):
  text = "\n".join([
      "HloModule m",
      "%inner (p: f32[2]) -> f32[2] {",
      "  %f = f32[2]{0} fusion(%p), kind=kLoop",
      "  ROOT %g = f32[2]{0} dot(%f, %f)",
      "}",
      "ENTRY %main (p: f32[2]) -> f32[2] {",
      "  %a = f32[2]{0} fusion(%p), kind=kLoop, calls=%inner",
      "  %d = f32[2]{0} dot(%a, %a)",
      "  ROOT %c = f32[2]{0} custom-call(%d)",
      "}"])
  monkeypatch.setattr(latency, "optimized_hlo", lambda fn, ids: text)
  path = tmp_path / "hlo.txt"
  latency.write_hlo(str(path), {"ensemble": None}, np.zeros((3, 2), np.int32))
  assert path.read_text().splitlines()[0] == "===== ensemble batch 3: 1 fusion, 1 dot, 1 custom-call ====="


# ------------------------------------------------------------------------------------- side_by_side.py


def test_side_by_side_alternates_which_side_runs_first(tmp_path, monkeypatch):
  order = []
  for d in ("v/bin", "k", "f", "w"):  # the reference's setup, as main checks it before measuring
    (tmp_path / d).mkdir(parents=True)
  (tmp_path / "v" / "bin" / "python").write_text("")
  (tmp_path / "v" / "bin" / "python").chmod(0o755)
  (tmp_path / "harness.py").write_text("")
  monkeypatch.setattr(side_by_side, "HARNESS", tmp_path / "harness.py")
  monkeypatch.setattr(side_by_side, "ours", lambda case, steps: order.append(("ours", case[0], steps)) or 2.0)
  monkeypatch.setattr(side_by_side, "reference", lambda case, steps, args: order.append(("reference", case[0], steps)) or 1.0)
  versions = {"python": "3.11", "torch": "2.13.0+cpu", "fuxictr": "2.3.10"}
  monkeypatch.setattr(side_by_side, "reference_software", lambda venv: versions)
  out = tmp_path / "sbs.json"
  monkeypatch.setattr(sys, "argv", ["x", "--ref-venv", str(tmp_path / "v"), "--kdef", str(tmp_path / "k"), "--fuxictr",
                                    str(tmp_path / "f"), "--ref-work", str(tmp_path / "w"), "--out", str(out),
                                    "--cases", "mlp_k1", "--rounds", "3", "--steps", "7", "--threads", str(os.cpu_count())])
  side_by_side.main()
  assert order == [(s, "mlp_k1", 7) for s in ("ours", "reference", "reference", "ours", "ours", "reference")]
  record = json.loads(out.read_text())  # what produced the numbers: both sides' versions, each case's settings
  assert record["software"]["reference"] == versions and "jax" in record["software"]["ours"]
  assert record["cases"]["mlp_k1"] == {"k": 1, "batch": 10_000, "reference_model": "DNN", "ours_args": ["--ks", "1", "--variants", "group"]}


def _fake_subprocess(monkeypatch, stdout):
  cmds = []

  def run(cmd, capture_output, text):
    cmds.append(cmd)
    return types.SimpleNamespace(stdout=stdout, stderr="", returncode=0)

  monkeypatch.setattr(side_by_side.subprocess, "run", run)
  return cmds


def _flag(cmd, name):
  return cmd[cmd.index(name) + 1]


def test_both_sides_run_the_same_steps_and_warm_up(monkeypatch):
  cases = {c[0]: c for c in side_by_side.CASES}
  cmds = _fake_subprocess(monkeypatch, 'K=  3 group ...\n{\n "rows": [{"K": 3, "group": {"samples_per_s": 7.0}}]\n}\n')
  assert side_by_side.ours(cases["kdef_k3"], 12) == 7.0
  args = argparse.Namespace(ref_venv="/v", kdef="k", fuxictr="f", ref_work="w", threads=2)
  ref_cmds = _fake_subprocess(monkeypatch, "log\n" + json.dumps({"samples_per_s": 3.0}) + "\n")
  assert side_by_side.reference(cases["kdef_k3"], 12, args) == 3.0
  ours_cmd, ref_cmd = cmds[0], ref_cmds[0]
  assert _flag(ours_cmd, "--steps") == _flag(ref_cmd, "--steps") == "12"
  assert _flag(ours_cmd, "--warmup") == _flag(ref_cmd, "--warmup") == "3"
  assert _flag(ours_cmd, "--rounds") == "1" and _flag(ours_cmd, "--batch") == _flag(ref_cmd, "--batch-size") == "10000"


def test_ours_reads_the_students_row_and_the_reference_its_median(monkeypatch):
  cases = {c[0]: c for c in side_by_side.CASES}
  cmds = _fake_subprocess(monkeypatch, 'ipnn:1,...: 9 ms/step\n{\n "rows": [{"students": "x", "samples_per_s": 5.0}]\n}\n')
  assert side_by_side.ours(cases["kdef_latest"], 4) == 5.0
  assert "--students" in cmds[0] and _flag(cmds[0], "--set") == "model.ecn.num_cross_layers=4"
  args = argparse.Namespace(ref_venv="/v", kdef="k", fuxictr="f", ref_work="w", threads=2)
  cmds = _fake_subprocess(monkeypatch, json.dumps({"samples_per_s": 1.0, "median_samples_per_s": 2.0}))
  assert side_by_side.reference(cases["kdef_latest"], 4, args) == 2.0
  assert _flag(cmds[0], "--overrides") == side_by_side.LATEST_OVERRIDES and _flag(cmds[0], "--model") == "EKTF_L"
  cmds = _fake_subprocess(monkeypatch, json.dumps({"samples_per_s": 1.0}))
  side_by_side.reference(cases["kdef_k3"], 4, args)
  assert "--overrides" not in cmds[0]  # EKTF (K=3) as the authors ran it


def test_last_json_takes_the_last_json_line():
  assert side_by_side._last_json('{"a": 1}\nnoise\n{"a": 2}\ntail\n') == {"a": 2}


def test_side_by_side_medians_leave_out_a_half_measured_round():
  """A run cut between a round's two halves: ours' unpaired third value stays in the raw list only."""
  args = argparse.Namespace(rounds=3, steps=10, threads=2)
  d = side_by_side.record({"kdef_k3": {"ours": [30.0, 20.0, 33.0], "reference": [10.0, 10.0]}}, args)["summary"]["kdef_k3"]
  assert (d["ours_samples_per_s"], d["speedup"], d["speedup_per_round"], d["speedup_paired"]) == (25.0, 2.5, [3.0, 2.0], 2.5)
  assert d["ours"] == [30.0, 20.0, 33.0]


def test_side_by_side_records_both_sides_threads():
  args = argparse.Namespace(rounds=1, steps=1, threads=(os.cpu_count() or 1) + 5)
  rec = side_by_side.record({"mlp_k1": {"ours": [2.0], "reference": [1.0]}}, args)
  assert rec["ours_threads"] == os.cpu_count() and rec["reference_threads"] == args.threads


# ------------------------------------------------------------------------------------- table_update.py


def _small_update_case():
  o = common.default_train_config().optim
  rng = np.random.default_rng(0)
  table0 = rng.normal(0, 1e-2, (300, 16)).astype(np.float32)
  batches = [(jnp.asarray(rng.integers(0, 300, (8, 5)), jnp.int32), jnp.asarray(rng.normal(0, 1e-2, (8, 5, 16)), jnp.float32))
             for _ in range(2)]
  return o, table0, batches


def test_table_update_variants_donate_as_documented_and_all_compute_the_regularizer():
  o, table0, batches = _small_update_case()
  rs = table_update.runners(table0, batches, o, o.embedding_l2)
  want = 0.5 * o.embedding_l2 * float(np.sum(table0.astype(np.float64) ** 2))
  for name, donated in (("library", True), ("stacked", False), ("stacked_donated", True)):
    r = rs[name]
    before = jax.tree_util.tree_leaves(r.carry)
    _, reg = r.fn(r.carry, *batches[0])
    assert float(reg) == pytest.approx(want, rel=1e-5), name  # the (λ/2)·‖E‖² part of the work is done
    assert all(x.is_deleted() for x in before) == donated, name


def test_table_update_record_compares_medians_and_final_tables(monkeypatch):
  vocab = (50, 30)
  written = []

  def fake_time_interleaved(runners, warmup, steps, rounds):
    for r in runners:
      r.first_call_s = 1.0
      r.run(2)
    return [(2e-3, 1e-3, 3e-3), (1e-3, 0.5e-3, 1.5e-3), (4e-3, 3e-3, 5e-3)]

  monkeypatch.setattr(table_update, "CRITEO_VOCAB", vocab)
  monkeypatch.setattr(table_update, "criteo_batches", lambda b, n: common.criteo_batches(b, n, vocab=vocab))
  monkeypatch.setattr(table_update, "time_interleaved", fake_time_interleaved)
  monkeypatch.setattr(table_update, "machine", lambda: {})
  monkeypatch.setattr(table_update, "write_json", lambda path, rec, echo=True: written.append(rec))
  monkeypatch.setattr(sys, "argv", ["table_update.py", "--batch", "8"])
  table_update.main()
  (rec,) = written
  v = rec["variants"]
  assert rec["rows"] == 80 and [v[k]["ms"] for k in table_update.VARIANTS] == [2.0, 1.0, 4.0]
  assert (v["library"]["min_ms"], v["library"]["max_ms"]) == (1.0, 3.0) and v["library"]["calls"] == 2
  assert rec["stacked_over_library"] == 0.5 and rec["stacked_donated_over_library"] == 2.0
  assert v["library"]["max_abs_diff_of_table_vs_library"] == 0.0
  for k in ("stacked", "stacked_donated"):
    assert v[k]["max_abs_diff_of_table_vs_library"] < 1e-6  # vs the library's final table, not the start one (~1e-3 off)
