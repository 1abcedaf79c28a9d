"""The benchmarks' timing protocol: interleaved rounds in rotating order, rotated build order per process."""
import argparse
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import common  # noqa: E402
import train_throughput  # noqa: E402


class FakeRunner:
  """Records when it runs; ``seconds`` per call."""

  def __init__(self, name, log, seconds):
    self.name, self.log, self.seconds = name, log, seconds

  def run(self, k):
    self.log.append((self.name, k))
    return self.seconds[len([e for e in self.log if e[0] == self.name]) - 1] * k


def test_time_interleaved_warms_all_first_then_rotates_the_order():
  log = []
  a = FakeRunner("a", log, [9.0, 1.0, 3.0, 2.0])  # warm-up, then rounds: per-call 1, 3, 2
  b = FakeRunner("b", log, [9.0, 5.0, 4.0, 6.0])
  (med_a, lo_a, hi_a), (med_b, lo_b, hi_b) = common.time_interleaved([a, b], warmup=1, steps=2, rounds=3)
  assert log == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("b", 2), ("a", 2), ("a", 2), ("b", 2)]
  assert (med_a, lo_a, hi_a) == (2.0, 1.0, 3.0)  # warm-up time never counted
  assert (med_b, lo_b, hi_b) == (5.0, 4.0, 6.0)
  assert (a.first_call_s, b.first_call_s) == (9.0, 9.0)  # the compiling first call, reported on its own


def test_warm_up_beyond_the_first_call_is_not_timed_either():
  log = []
  a = FakeRunner("a", log, [7.0, 8.0, 1.0, 2.0, 3.0])
  (med, lo, hi), = common.time_interleaved([a], warmup=2, steps=1, rounds=3)
  assert log == [("a", 1), ("a", 1), ("a", 1), ("a", 1), ("a", 1)]
  assert (med, lo, hi) == (2.0, 1.0, 3.0) and a.first_call_s == 7.0


def test_min_round_s_raises_the_calls_per_round_of_fast_runners_only():
  log = []
  fast = FakeRunner("fast", log, [5.0, 0.001] + [0.001] * 3)  # compile, warm-up: 1 ms per call
  slow = FakeRunner("slow", log, [5.0, 0.5] + [0.5] * 3)
  (med_f, _, _), (med_s, _, _) = common.time_interleaved([fast, slow], warmup=2, steps=4, rounds=3, min_round_s=0.05)
  assert (fast.steps, slow.steps) == (50, 4)  # ceil(0.05 / 0.001) calls; the slow one keeps --steps
  assert [k for name, k in log if name == "fast"] == [1, 1, 50, 50, 50]
  assert (med_f, med_s) == (0.001, 0.5)


def test_processes_build_the_variants_in_rotated_order():
  args = argparse.Namespace(variants=["group", "vmap", "loop"], batch=10, dtype="float32", loop_max_k=16,
                            warmup=1, steps=2, rounds=3)
  orders = []
  for p in range(3):
    argv = train_throughput._child_argv(args, 6, "/tmp/x.json", p)
    i = argv.index("--variants")
    orders.append(argv[i + 1:i + 4])
    assert argv[argv.index("--ks") + 1] == "6" and argv[argv.index("--out") + 1] == "/tmp/x.json"
  assert orders == [["group", "vmap", "loop"], ["vmap", "loop", "group"], ["loop", "group", "vmap"]]


_CPUINFO_ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9B45
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni
processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9B45
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni
"""


def test_host_cpu_names_the_cpu_generation_and_isa():
  from kdef_jax.report import host_cpu

  cpu = host_cpu(_CPUINFO_ZEN5)
  assert cpu == {"model": "AMD EPYC 9B45", "logical_cpus": 2, "isa": ["avx2", "fma", "avx512f", "avx512_bf16"],
                 "family": 26, "model_id": 2}
  arm = host_cpu("processor\t: 0\nFeatures\t: fp asimd sve\n")
  assert arm["isa"] == ["asimd", "sve"] and arm["logical_cpus"] == 1 and "family" not in arm
  assert host_cpu("")["model"]  # no /proc/cpuinfo: platform's name, never empty


def test_benchmark_records_carry_the_cpu():
  assert set(common.machine()["cpu"]) >= {"model", "isa", "logical_cpus"}


def test_latency_writes_each_predictors_optimized_hlo(tmp_path):
  import jax
  import numpy as np
  import latency
  from kdef_jax.export import make_predictor

  model = common.criteo_model([common.mlp_group(2)], vocab=(7, 5))
  ids = np.array([[1, 2], [3, 4], [0, 1]], np.int32)
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, False))(ids)
  predictors = {"ensemble": make_predictor(model, variables), "one_student": make_predictor(model, variables, 1)}
  path = tmp_path / "hlo.txt"
  latency.write_hlo(str(path), predictors, ids)
  text = path.read_text()
  heads = [line for line in text.splitlines() if line.startswith("=====")]
  assert [h.split()[1] for h in heads] == ["ensemble", "one_student"] and all("batch 3:" in h for h in heads)
  assert sum(line.startswith("ENTRY") for line in text.splitlines()) == 2 and " fusion, " in heads[0]
  # the HLO is the program the predictor runs: the one-student program multiplies by one [16·2, 400] kernel
  one = text[text.index(heads[1]):]
  assert "f32[32,400]" in one and "f32[2,32,400]" not in one


def test_collective_bytes_sums_the_outputs_of_each_collective():
  import collective_bytes  # noqa: E402 - benchmarks/ is on sys.path above

  hlo = "\n".join([
      "  %all-reduce.1 = (f32[400,624]{1,0}, f32[400]{0}) all-reduce(%a, %b), channel_id=1",
      "  %all-gather.2 = s32[10,39]{1,0} all-gather(%c), dimensions={0}",
      "  %ars = bf16[8]{0} all-reduce-start(%d)",
      "  %ard = bf16[8]{0} all-reduce-done(%ars)",
      "  %add.3 = f32[400]{0} add(%x, %y)",
      "  %rs = pred[16]{0} reduce-scatter(%e)",
  ])
  assert collective_bytes.collective_bytes(hlo) == {
      "all-reduce": [2, (400 * 624 + 400) * 4 + 8 * 2],  # the -done half of an async pair is not counted
      "all-gather": [1, 10 * 39 * 4],
      "reduce-scatter": [1, 16],
  }
  # GPU's async forms: all-gather-start and collective-permute-start return (operands, results[, contexts]);
  # only the results count (a combined all-gather has a tuple of each)
  gpu = "\n".join([
      "  %ags = (f32[4,8]{1,0}, f32[16,8]{1,0}) all-gather-start(%a), dimensions={0}",
      "  %agd = f32[16,8]{1,0} all-gather-done(%ags)",
      "  %agc = ((f32[2]{0}, bf16[3,1]{1,0}), (f32[8]{0}, bf16[12,1]{1,0})) all-gather-start(%b, %c), dimensions={0}",
      "  %cps = (f32[5]{0}, f32[5]{0}, u32[], u32[]) collective-permute-start(%d), source_target_pairs={{0,1}}",
      "  %ars = (f32[6]{0}, f32[7]{0}) all-reduce-start(%e, %f)",
      "  %rss = ((bf16[4096]{0}), bf16[256]{0}) reduce-scatter-start(%g), dimensions={0}",
      "  %a2a = ((f32[8,4]{1,0}), f32[8,4]{1,0}, u32[]) all-to-all-start(%h), dimensions={0}",
  ])
  assert collective_bytes.collective_bytes(gpu) == {
      "all-gather": [2, 16 * 8 * 4 + 8 * 4 + 12 * 2], "collective-permute": [1, 5 * 4], "all-reduce": [1, 13 * 4],
      "reduce-scatter": [1, 256 * 2], "all-to-all": [1, 8 * 4 * 4]}


def test_clip_orders_benchmark_compares_optax_rule_with_the_library():
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import clip_order  # noqa: E402 - benchmarks/ is on sys.path above
  from kdef_jax.steps import clip_by_global_norm

  rng = np.random.default_rng(0)
  g = {"t": jnp.asarray(rng.normal(size=(50, 16)), jnp.float32), "b": jnp.asarray(rng.normal(size=(7,)), jnp.float32)}
  theirs = clip_order.optax_order_clip(2.0).update(g, ())[0]
  want = optax.clip_by_global_norm(2.0).update(g, optax.EmptyState())[0]
  ours = clip_by_global_norm(2.0).update(g, ())[0]
  for a, b, c in zip(*(jax.tree_util.tree_leaves(x) for x in (theirs, want, ours))):
    np.testing.assert_allclose(a, b, rtol=1e-6)  # the benchmark's baseline is optax's rule
    np.testing.assert_allclose(c, b, rtol=1e-6)  # and the library's differs by rounding only


def test_table_update_benchmark_times_the_same_update_in_both_layouts():
  import jax.numpy as jnp
  import numpy as np
  import table_update  # noqa: E402 - benchmarks/ is on sys.path above
  from common import default_train_config

  o = default_train_config().optim
  o.clip_norm = 0.05  # below these gradients' norm (~0.25): every step clips, so the clip factor is compared too
  rng = np.random.default_rng(0)
  table0 = rng.normal(0, 1e-2, (300, 16)).astype(np.float32)
  batches = [(jnp.asarray(rng.integers(0, 300, (8, 5)), jnp.int32), jnp.asarray(rng.normal(0, 1e-2, (8, 5, 16)), jnp.float32))
             for _ in range(3)]
  rs = table_update.runners(table0, batches, o, o.embedding_l2)
  for r in rs.values():
    r.run(5)
  lib = np.asarray(rs["library"].carry[0]["embedding"]["table"])
  assert np.max(np.abs(lib - table0)) > 1e-4  # the steps moved the table
  for v in ("stacked", "stacked_donated"):
    s = np.asarray(rs[v].carry[0])
    np.testing.assert_allclose(s[0], lib, rtol=1e-5, atol=1e-8)
    adam = rs["library"].carry[1][1].inner_state[0]  # (clip state, injected Adam's (ScaleByAdamState, scale))
    np.testing.assert_allclose(s[1], np.asarray(adam.mu["embedding"]["table"]), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(s[2], np.asarray(adam.nu["embedding"]["table"]), rtol=1e-4, atol=1e-12)


def test_batchnorm_block_autodiff_variant_is_the_librarys_math():
  """At dropout 0 the plainly written block and the library's agree, forward and backward, on every row."""
  import batchnorm_block
  import jax
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(64, 8)) * 2 + 1, jnp.float32)
  dy = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  key = jax.random.PRNGKey(1)
  block, lib_fwd = batchnorm_block.library_block(0.0)
  v = block.init({"params": jax.random.PRNGKey(0), "dropout": key}, x)
  out = []
  for fwd in (lib_fwd, lambda p, s, x, k: batchnorm_block.autodiff_fwd(p, s, x, k, 0.0)):
    y, vjp = jax.vjp(lambda p, x: fwd(p, v["batch_stats"], x, key), v["params"], x)
    out.append((y, vjp(dy)))
  (y0, (dp0, dx0)), (y1, (dp1, dx1)) = out
  np.testing.assert_allclose(y1, y0, atol=1e-5)
  np.testing.assert_allclose(dx1, dx0, atol=1e-4)  # row 0 too: the shift is a constant in both
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), dp1, dp0)


def test_write_json_never_replaces_a_device_file(tmp_path, monkeypatch):
  import os

  written = []
  monkeypatch.setattr(os, "replace", lambda a, b: written.append((a, b)))
  common.write_json("/dev/null", {"a": 1}, echo=False)
  assert written == []  # written straight into the device, not via a temporary renamed over it
  common.write_json(str(tmp_path / "r.json"), {"a": 1}, echo=False)
  assert len(written) == 1 and written[0][1] == tmp_path / "r.json"  # a regular file: via a temporary, renamed


def test_preprocess_benchmark_measures_each_size_in_a_child_process(tmp_path):
  """The parent runs itself as a child per size (no --out there): the JSON gets one run per size."""
  import json
  import subprocess

  out = tmp_path / "pp.json"
  p = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "preprocess.py"), "--rows", "2000", "--repeat", "1",
                      "--engine", "python", "--workdir", str(tmp_path / "w"), "--out", str(out)],
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  runs = json.loads(out.read_text())["runs"]
  assert len(runs) == 1 and runs[0]["rows"] == 2000


def test_loader_benchmark_times_opening_the_cache_with_and_without_its_checksum_check(tmp_path, monkeypatch):
  import loader  # noqa: E402 - benchmarks/ is on sys.path above
  from kdef_jax.data.synthetic import SyntheticSpec, build_synthetic

  path = build_synthetic(SyntheticSpec(vocab_sizes=(50, 60), num_train=5000, num_valid=10, num_test=10), tmp_path)
  calls = []
  monkeypatch.setattr(loader, "open_cache", lambda p, verify: calls.append(verify))
  got = loader.open_cache_seconds(path, repeats=3)
  assert calls == [True] * 3 + [True] * 3 + [False] * 3  # warm-up, then each way
  assert got["bytes"] == sum(p.stat().st_size for p in path.glob("*.npy")) > 5000 * 2 * 4
  assert got["verify_s"] >= 0 and got["no_verify_s"] >= 0 and got["check_gib_per_s"] > 0


def test_served_file_check_reloads_the_exported_predictor_and_compares(tmp_path):
  import served_file  # noqa: E402 - benchmarks/ is on sys.path above

  made = served_file.make(tmp_path / "carry")
  assert made["platforms"] == ["cpu", "cuda", "tpu"]
  got = served_file.check(tmp_path / "carry")
  assert got["platform"] == "cpu" and got["rows"] == 512 and got["max_abs_diff"] < 1e-6
  expected = tmp_path / "carry" / "expected.npy"
  import numpy as np
  np.save(expected, np.load(expected) + 0.01)  # the check measures, not assumes
  assert abs(served_file.check(tmp_path / "carry")["max_abs_diff"] - 0.01) < 1e-6


def test_student_specs_parse_overrides_by_type_and_name_a_bad_key_before_any_work(tmp_path, monkeypatch, capsys):
  import latency

  (tmp_path / "f").write_text("")
  groups = common.spec_groups("mlp:2", ["model.batch_norm=False", "model.hidden_units=(64,64)"])
  kw = dict(groups[0].kwargs)
  assert groups[0].count == 2 and kw["batch_norm"] is False and tuple(kw["hidden_units"]) == (64, 64)
  for script, argv, message in [
      (train_throughput, ["--ks", "1", "--set", "model.hidden_units=(8,)"], "--set: only with --students"),
      (train_throughput, ["--ks", "1", "--mflop-per-sample", "99"], "--mflop-per-sample: only with --students"),
      (latency, ["--set", "model.dropout=0.2"], "--set: only with --students"),
      (train_throughput, ["--students", "ecn:1", "--set", "model.nope=1"], "unknown config key 'model.nope'"),
      (latency, ["--students", "ecn:1", "--set", "model.ecn.num_cross_layers=4.7"],
       "model.ecn.num_cross_layers='4.7': expected an integer"),
      # flags the --students benchmark would ignore, values measured twice, outputs that cannot be written:
      (train_throughput, ["--students", "ecn:1", "--ks", "3"], "--ks: not with --students"),
      (latency, ["--students", "ecn:1", "--k", "3"], "--k: not with --students"),
      (train_throughput, ["--ks", "1", "1"], "--ks 1 1: a value given twice"),
      (latency, ["--batches", "8", "8"], "--batches 8 8: a size given twice"),
      (train_throughput, ["--ks", "1", "--out", "DIR"], "argument --out: DIR is a directory"),
      (latency, ["--hlo-out", "FILE/h.txt"], "argument --hlo-out: FILE/h.txt: FILE is a file, not a folder"),
      (latency, ["--min-round-s", "-1"], "-1 is not a number >= 0"),
      (train_throughput, ["--ks", "1", "--warmup", "0"], "0 is not an integer >= 1")]:
    argv = [a.replace("DIR", str(tmp_path)).replace("FILE", str(tmp_path / "f")) for a in argv]
    message = message.replace("DIR", str(tmp_path)).replace("FILE", str(tmp_path / "f"))
    monkeypatch.setattr(sys, "argv", ["x", *argv])
    monkeypatch.setattr(script, "criteo_batches", lambda *a, **k: pytest.fail("work started before the check"))
    with pytest.raises(SystemExit):
      script.main()
    assert message in capsys.readouterr().err


def test_side_by_side_pairs_each_rounds_measurements_and_keeps_a_cut_short_round():
  import side_by_side

  args = argparse.Namespace(rounds=3, steps=10, threads=2)
  raw = {"kdef_k3": {"ours": [30.0, 20.0, 33.0], "reference": [10.0, 10.0, 11.0]},
         "kdef_k10": {"ours": [8.0], "reference": []}}  # cut short before its reference ran
  s = side_by_side.record(raw, args)["summary"]
  assert list(s) == ["kdef_k3"]
  assert s["kdef_k3"]["speedup_per_round"] == [3.0, 2.0, 3.0] and s["kdef_k3"]["speedup_paired"] == 3.0
  assert s["kdef_k3"]["speedup"] == 30.0 / 10.0 and s["kdef_k3"]["ours"] == [30.0, 20.0, 33.0]


def test_processes_run_every_k_in_each_round_and_pair_the_scaling_ratio_by_round(tmp_path, monkeypatch):
  import json as json_mod

  calls, step = [], {(1, 0): 1.0, (10, 0): 8.0, (1, 1): 2.0, (10, 1): 14.0}  # round 1 ran on a slower machine

  def fake_run(argv, check, stdout):
    k, p = int(argv[argv.index("--ks") + 1]), len([c for c in calls if c[0] == int(argv[argv.index("--ks") + 1])])
    calls.append((k, p))
    row = {"K": k, "mlp_gflop_per_step": 1.0, "group": {"step_s": step[k, p]}}
    with open(argv[argv.index("--out") + 1], "w") as fh:
      json_mod.dump({"rows": [row]}, fh)

  monkeypatch.setattr(train_throughput.subprocess, "run", fake_run)
  args = argparse.Namespace(ks=[1, 10], processes=2, variants=["group"], batch=10, dtype="float32", loop_max_k=16,
                            warmup=1, steps=2, rounds=1, out=str(tmp_path / "t.json"))
  train_throughput.across_processes(args)
  assert calls == [(1, 0), (10, 0), (1, 1), (10, 1)]  # every K in each round, not one K's processes in a row
  rows = json_mod.loads((tmp_path / "t.json").read_text())["rows"]
  assert rows[1]["time_ratio_vs_k1_per_process"] == [8.0, 7.0] and rows[1]["time_ratio_vs_k1"] == 7.5
  assert rows[1]["group"]["step_s_per_process"] == [8.0, 14.0] and rows[0]["time_ratio_vs_k1"] == 1.0


def test_dropout_mask_benchmark_times_two_masks_of_the_same_distribution():
  """Both timed variants draw a real mask of the asked shape and keep rate (a variant that drew nothing
  could not look fast), and a fresh key gives a fresh mask."""
  import dropout_mask
  import jax
  import numpy as np

  fns = dropout_mask.mask_fns((200, 50), 0.75)
  assert set(fns) == {"hash", "threefry"}
  for name, fn in fns.items():
    a, b = np.asarray(fn(jax.random.PRNGKey(0))), np.asarray(fn(jax.random.PRNGKey(1)))
    assert a.shape == (200, 50) and a.dtype == bool, name
    assert abs(a.mean() - 0.75) < 0.02 and abs(b.mean() - 0.75) < 0.02, name  # 10,000 draws: 4.6 sigma
    assert (a != b).mean() > 0.3, name  # independent masks differ in 2·0.75·0.25 = 37.5% of places


def test_served_file_and_side_by_side_check_their_inputs_before_any_work(tmp_path, monkeypatch, capsys):
  """An empty --check folder was a FileNotFoundError traceback; side_by_side measured ours before
  finding that the reference's venv or folders were missing, and --rounds 0 did nothing with status 0."""
  import served_file
  import side_by_side

  with pytest.raises(SystemExit) as e:
    served_file.main(["--check", str(tmp_path)])
  assert e.value.code == 2
  assert f"--check {tmp_path}: no predictor.jaxexport, ids.npy, expected.npy there" in capsys.readouterr().err
  monkeypatch.setattr(side_by_side, "ours", lambda *a: pytest.fail("measured before the check"))
  monkeypatch.setattr(sys, "argv", ["x", "--ref-venv", str(tmp_path / "v"), "--kdef", str(tmp_path / "k"),
                                    "--fuxictr", str(tmp_path), "--ref-work", str(tmp_path), "--rounds", "0"])
  with pytest.raises(SystemExit) as e:
    side_by_side.main()
  err = capsys.readouterr().err
  assert e.value.code == 2 and "--rounds 0 is not >= 1" in err
  assert f"--ref-venv {tmp_path / 'v'}: no bin/python there" in err and f"--kdef {tmp_path / 'k'}: no such folder" in err


def test_a_latency_runner_waits_for_every_call_and_a_throughput_runner_for_the_last(monkeypatch):
  """latency.py's calls are each waited for (sync_each); before, a batch-1 "latency" was back-to-back
  calls with one wait per round, 1.6-3x less than a served call's."""
  waited = []
  monkeypatch.setattr(common.jax, "block_until_ready", lambda x: waited.append(x) or x)
  for sync_each, expected in ((True, [0, 1, 2, 2]), (False, [2])):  # each call (then the last again), or the last
    waited.clear()
    calls = iter(range(3))
    common.Runner(lambda: next(calls), [()], sync_each=sync_each).run(3)
    assert waited == expected
