"""benchmarks/device_profile.py: op events from a profiler trace, their union and per-call summary."""
import sys
import tempfile

import jax
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import device_profile  # noqa: E402


def _event(op, module, offset_ps, duration_ps, name=None):
    """An event named ``name`` (default: the op's name, as on a GPU's "XLA Ops" line) running ``op``."""
    return (name or op, f'offset_ps: {offset_ps} duration_ps: {duration_ps} '
            f'stats {{ metadata_id: 10 str_value: "{op}" }} stats {{ metadata_id: 11 str_value: "{module}" }}')


def _plane(name, lines):
    names = sorted({n for _, evs in lines for n, _ in evs})
    ids = {n: i + 1 for i, n in enumerate(names)}
    body = "".join(f'lines {{ id: {i + 1} name: "{ln}" timestamp_ns: 1000 '
                   + "".join(f"events {{ metadata_id: {ids[n]} {rest} }}" for n, rest in evs) + " }"
                   for i, (ln, evs) in enumerate(lines))
    meta = "".join(f'event_metadata {{ key: {i} value {{ id: {i} name: "{n}" }} }} ' for n, i in ids.items())
    return (f'planes {{ name: "{name}" {body} {meta}'
            'stat_metadata { key: 10 value { id: 10 name: "hlo_op" } } '
            'stat_metadata { key: 11 value { id: 11 name: "hlo_module" } } }')


def test_union_of_intervals_counts_overlaps_once():
    assert device_profile.union_ns([]) == 0.0
    assert device_profile.union_ns([(0, 10), (5, 15), (20, 25), (21, 22)]) == 15 + 5
    assert device_profile.union_ns([(20, 25), (0, 10)]) == 15


def test_a_gpu_plane_counts_its_xla_ops_line_only_and_filters_the_module():
    # XLA Ops (line at 1000 ns, offsets in ps): fusion.1 [1000, 3000] ns, gemm [4000, 8000] ns; the stream line repeats the kernels of
    # both (and must not be counted twice); a host-plane op of another module is ignored.
    ops = [_event("fusion.1", "jit_apply", 0, 2_000_000), _event("gemm", "jit_apply", 3_000_000, 4_000_000)]
    stream = [_event("fusion.1", "jit_apply", 0, 1_000_000, "loop_fusion_kernel"),
              _event("fusion.1", "jit_apply", 1_000_000, 1_000_000, "loop_fusion_kernel_2"),
              _event("gemm", "jit_apply", 3_000_000, 4_000_000, "sm90_xmma_gemm_tf32")]
    host = [_event("copy", "jit_other", 0, 9_000_000, "memcpy")]
    text = _plane("/device:GPU:0", [("XLA Ops", ops), ("Stream #7", stream)]) + _plane("/host:CPU", [("t", host)])
    profile = jax.profiler.ProfileData.from_text_proto(text)
    assert sorted(device_profile.op_events(profile, "apply")) == [("fusion.1", 1000.0, 3000.0), ("gemm", 4000.0, 8000.0)]
    assert device_profile.kernel_names(profile, "apply") == {
        "fusion.1": ["loop_fusion_kernel", "loop_fusion_kernel_2"], "gemm": ["sm90_xmma_gemm_tf32"]}


def test_the_same_event_on_two_lines_of_a_plane_without_xla_ops_counts_once():
    ev = _event("thunk", "jit_train_step", 0, 5_000_000)
    text = _plane("/host:CPU", [("a", [ev]), ("b", [ev, _event("dot", "jit_train_step", 0, 1_000_000)])])
    events = device_profile.op_events(jax.profiler.ProfileData.from_text_proto(text), "train_step")
    assert sorted(events) == [("dot", 1000.0, 2000.0), ("thunk", 1000.0, 6000.0)]


def test_summary_per_call():
    # two calls: a 3 ms op twice and a 1 ms op overlapping the first by 0.5 ms, 2 ms apart from the second
    ms = 1e6
    events = [("a", 0, 3 * ms), ("b", 2.5 * ms, 3.5 * ms), ("a", 10 * ms, 13 * ms)]
    s = device_profile.summarize(events, calls=2, wall_ms=5.0, top=1, kernels={"a": ["gemm_kernel"]})
    assert s["busy_ms"] == pytest.approx((3.5 + 3) / 2)
    assert s["gap_ms"] == pytest.approx(5.0 - 3.25)
    assert s["op_ms_summed"] == pytest.approx(7 / 2)
    assert s["ops_per_call"] == 1.5 and s["distinct_ops"] == 2
    assert s["top_ops"] == [{"op": "a", "ms": pytest.approx(3.0), "share": pytest.approx(3 / 3.5), "events_per_call": 1.0,
                             "kernels": ["gemm_kernel"]}]


def test_a_real_trace_of_a_jitted_program_has_its_ops():
    f = jax.jit(lambda x: jax.numpy.tanh(x @ x).sum())
    x = jax.numpy.ones((64, 64))
    runner = device_profile.Runner(f, [(x,)])
    runner.run(1)
    with tempfile.TemporaryDirectory() as d:
        profile, seconds = device_profile.traced(runner, 2, d)
    assert seconds > 0
    events = device_profile.op_events(profile, "lambda")  # the profile outlives its trace folder
    assert events and all(end >= start for _, start, end in events)
    assert set(device_profile.kernel_names(profile, "lambda")) <= {op for op, _, _ in events}
