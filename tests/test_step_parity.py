"""experiments/step_parity.py without the reference's torch: its weight mapping and its verdicts."""

import json
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))

import step_parity as sp  # noqa: E402

FIELDS = ["user", "item", "city"]
VOCAB = [5, 7, 4]


def _meta(k=2, hidden=(8, 6)):
    return {"model": "EKTF", "k": k, "batch": 4, "steps": 2, "fields": FIELDS, "vocab_sizes": VOCAB,
            "params": {"hidden_units": list(hidden), "batch_norm": True, "embedding_dim": 3, "learning_rate": 1e-3,
                       "embedding_regularizer": 0.01}}


def _model_and_state(meta):
    c = sp.our_config(meta)
    model = sp.build_model(c.model, types.SimpleNamespace(vocab_sizes=tuple(VOCAB), max_lens=None))
    state, _ = sp.make_training(model, c, jax.random.PRNGKey(1), len(FIELDS))
    return model, state


def _torch_layout(variables, meta) -> dict:
    """Our variables written the way the authors' state_dict names and shapes them (MLP_Block with BN:
    Linear at module 3j, BatchNorm1d at 3j + 1, the output Linear last; weights [out, in])."""
    out, offsets = {}, np.cumsum([0] + VOCAB)
    table = np.asarray(variables["params"]["embedding"]["table"])
    for f, lo, hi in zip(FIELDS, offsets[:-1], offsets[1:]):
        out[f"state0/embedding_layer.embedding_layer.embedding_layers.{f}.weight"] = table[lo:hi]
    g, bs = variables["params"]["group0_mlp"], variables["batch_stats"]["group0_mlp"]
    layers = len(meta["params"]["hidden_units"])
    for k in range(meta["k"]):
        for j in range(layers + 1):
            pre = f"state0/networks.{k}.mlp.{3 * j}."
            out[pre + "weight"] = np.asarray(g[f"Dense_{j}"]["kernel"][k]).T
            out[pre + "bias"] = np.asarray(g[f"Dense_{j}"]["bias"][k])
            if j < layers:
                bn = f"state0/networks.{k}.mlp.{3 * j + 1}."
                out[bn + "weight"], out[bn + "bias"] = (np.asarray(g[f"BatchNorm_{j}"][n][k]) for n in ("scale", "bias"))
                out[bn + "running_mean"], out[bn + "running_var"] = (np.asarray(bs[f"BatchNorm_{j}"][n][k]) for n in ("mean", "var"))
                out[bn + "num_batches_tracked"] = np.array(0)
    return out


class Recording(dict):
    @property
    def files(self):
        return list(self)


def test_the_authors_weights_land_where_our_model_reads_them():
    """Every parameter and BN statistic goes through the mapping (offsets, transposes, the student index)
    and back unchanged; a model whose variables are all different first."""
    meta = _meta()
    _, state = _model_and_state(meta)
    original = {"params": state.params, "batch_stats": state.batch_stats}
    ref = Recording(_torch_layout(jax.tree.map(lambda x: np.asarray(x) + np.float32(0.5), original), meta))
    loaded = sp.load_into(original, ref, "state0", sp.correspondence(ref, meta), meta)
    expected = jax.tree.map(lambda x: np.asarray(x) + np.float32(0.5), original)
    for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(loaded), jax.tree_util.tree_leaves_with_path(expected)):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=jax.tree_util.keystr(path))
    pairs = sp.correspondence(ref, meta)
    assert len(pairs) == 2 * (3 * 2 + 2 * 4)  # K=2 × (3 Dense layers × kernel and bias + 2 BNs × γ, β, mean, var)
    assert {p[3] for p in pairs} == {n[len("state0/"):] for n in ref if "networks" in n and "num_batches" not in n}


def _latest_meta(hidden=(8, 6), cross=2):
    return {"model": "EKTF_L", "k": 3, "batch": 4, "steps": 2, "fields": FIELDS, "vocab_sizes": VOCAB,
            "params": {"hidden_units": list(hidden), "batch_norm": True, "embedding_dim": 4, "learning_rate": 1e-3,
                       "embedding_regularizer": 0.01, "num_cross_layers": cross,
                       "net1_dropout": 0, "net2_dropout": 0, "net3_dropout": 0}}


def _torch_layout_latest(variables, meta) -> dict:
    """Our KDEF_Latest variables written the way the authors' EKTF_L state_dict names and shapes them:
    networks.0 = ProductNetwork (MLP_Block under dnn.mlp, BN at 3j + 1), networks.1 = FinalNet (field_gate,
    layer.j.linear, norm.j, fc), networks.2 = ExponentialCrossNetwork (w.i without bias, b.i, layer_norm.i,
    batch_norm.i with ONE channel, fc); torch weights [out, in]; plus the buffers that are not state."""
    out, offsets = {}, np.cumsum([0] + VOCAB)
    table = np.asarray(variables["params"]["embedding"]["table"])
    for f, lo, hi in zip(FIELDS, offsets[:-1], offsets[1:]):
        out[f"state0/embedding_layer.embedding_layer.embedding_layers.{f}.weight"] = table[lo:hi]
    P, S = variables["params"], variables["batch_stats"]
    a = lambda x: np.asarray(x[0])  # noqa: E731  (each group holds one student)

    def linear(t, d, bias=True):
        out[t + "weight"] = a(d["kernel"]).T
        if bias:
            out[t + "bias"] = a(d["bias"])

    def bn(t, d, st):
        out[t + "weight"], out[t + "bias"] = a(d["scale"]).reshape(-1), a(d["bias"]).reshape(-1)
        out[t + "running_mean"], out[t + "running_var"] = a(st["mean"]).reshape(-1), a(st["var"]).reshape(-1)
        out[t + "num_batches_tracked"] = np.array(0)

    layers = len(meta["params"]["hidden_units"])
    ip, ips = P["group0_ipnn"]["dnn"], S["group0_ipnn"]["dnn"]
    out["state0/networks.0.inner_product_layer.triu_mask"] = np.triu(np.ones((len(FIELDS),) * 2, bool), 1)
    for j in range(layers + 1):
        linear(f"state0/networks.0.dnn.mlp.{3 * j}.", ip[f"Dense_{j}"])
        if j < layers:
            bn(f"state0/networks.0.dnn.mlp.{3 * j + 1}.", ip[f"BatchNorm_{j}"], ips[f"BatchNorm_{j}"])
    fi, fis = P["group1_final"]["block1"], S["group1_final"]["block1"]
    linear("state0/networks.1.field_gate.linear.", fi["field_gate"]["linear"])
    for j in range(layers):
        linear(f"state0/networks.1.layer.{j}.linear.", fi[f"FinalLinear_{j}"]["linear"])
        bn(f"state0/networks.1.norm.{j}.", fi[f"BatchNorm_{j}"], fis[f"BatchNorm_{j}"])
    linear("state0/networks.1.fc.", fi["fc"])
    ec, ecs = P["group2_ecn"], S["group2_ecn"]
    for i in range(meta["params"]["num_cross_layers"]):
        linear(f"state0/networks.2.w.{i}.", ec[f"w_{i}"], bias=False)
        out[f"state0/networks.2.b.{i}"] = a(ec[f"b_{i}"])
        out[f"state0/networks.2.layer_norm.{i}.weight"], out[f"state0/networks.2.layer_norm.{i}.bias"] = (
            a(ec[f"ln_{i}"][n]) for n in ("scale", "bias"))
        bn(f"state0/networks.2.batch_norm.{i}.", ec[f"bn_{i}"], ecs[f"bn_{i}"])
    linear("state0/networks.2.fc.", ec["fc"])
    return out


def test_the_authors_ektf_l_weights_land_where_our_kdef_latest_reads_them():
    """IPNN, FinalNet and ECN: every parameter and BN statistic through the mapping (transposes, ECN's
    one-channel BN, the field gate) and back unchanged; every torch name used once, every leaf of ours filled."""
    meta = _latest_meta()
    _, state = _model_and_state(meta)
    assert set(state.params) == {"embedding", "group0_ipnn", "group1_final", "group2_ecn"}
    original = {"params": state.params, "batch_stats": state.batch_stats}
    shifted = jax.tree.map(lambda x: np.asarray(x) + np.float32(0.5), original)
    ref = Recording(_torch_layout_latest(shifted, meta))
    pairs = sp.correspondence(ref, meta)
    loaded = sp.load_into(original, ref, "state0", pairs, meta)
    leaves = jax.tree_util.tree_leaves_with_path(loaded)
    assert len(leaves) == len(jax.tree_util.tree_leaves(shifted))
    for (path, a), (_, b) in zip(leaves, jax.tree_util.tree_leaves_with_path(shifted)):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=jax.tree_util.keystr(path))
    # IPNN 3 Dense × 2 + 2 BN × 4; FinalNet gate 2 + 2 FinalLinear × 2 + 2 BN × 4 + fc 2; ECN 2 × (w, b, LN γ β, BN × 4) + fc 2
    assert len(pairs) == (6 + 8) + (2 + 4 + 8 + 2) + (2 * 8 + 2)
    assert {p[3] for p in pairs} == {n[len("state0/"):] for n in ref if "networks" in n and not n.endswith(sp.CONSTANT_BUFFERS)}
    # a torch parameter left out of the mapping, or one of ours never filled, is an error
    extra = Recording({**ref, "state0/networks.2.extra.weight": np.zeros(3)})
    with pytest.raises(ValueError, match="unmapped"):
        sp.correspondence(extra, meta)
    with pytest.raises(ValueError, match="not filled"):
        sp.load_into(original, ref, "state0", [p for p in pairs if p[3] != "networks.2.b.1"], meta)


def test_ektf_l_judges_all_but_the_ipnn_pre_bn_biases_and_running_means():
    meta = _latest_meta()
    assert sp.unjudged("params", ("group0_ipnn", "dnn", "Dense_0", "bias"), meta)
    assert sp.unjudged("batch_stats", ("group0_ipnn", "dnn", "BatchNorm_1", "mean"), meta)
    assert not sp.unjudged("params", ("group0_ipnn", "dnn", "Dense_2", "bias"), meta)  # the output layer's bias
    assert not sp.unjudged("params", ("group1_final", "block1", "FinalLinear_0", "linear", "bias"), meta)
    assert not sp.unjudged("batch_stats", ("group1_final", "block1", "BatchNorm_0", "mean"), meta)
    assert not sp.unjudged("batch_stats", ("group2_ecn", "bn_0", "mean"), meta)
    assert not sp.unjudged("params", ("group2_ecn", "b_0"), meta)


def test_the_pre_bn_biases_and_running_means_are_the_only_unjudged_quantities():
    meta = _meta()
    assert sp.unjudged("params", ("group0_mlp", "Dense_0", "bias"), meta)
    assert sp.unjudged("params", ("group0_mlp", "Dense_1", "bias"), meta)
    assert not sp.unjudged("params", ("group0_mlp", "Dense_2", "bias"), meta)  # the output layer's bias
    assert sp.unjudged("batch_stats", ("group0_mlp", "BatchNorm_0", "mean"), meta)
    assert not sp.unjudged("batch_stats", ("group0_mlp", "BatchNorm_0", "var"), meta)
    assert not sp.unjudged("params", ("group0_mlp", "Dense_0", "kernel"), meta)
    assert not sp.unjudged("params", ("group0_mlp", "Dense_0", "bias"), {**meta, "params": {**meta["params"], "batch_norm": False}})


def test_a_quantity_passes_within_four_times_the_authors_float32_difference_or_the_floor():
    rows = []
    exact = np.array([1.0, -2.0])
    sp.judge(rows, "step 0", "a", exact + [0, 4e-6], exact + [0, 2e-6], exact)  # 2e-6 ≤ 4 × 1e-6
    sp.judge(rows, "step 0", "b", exact + [0, 1.2e-5], exact + [0, 2e-6], exact)  # 6e-6 > 4 × 1e-6
    sp.judge(rows, "step 0", "c", exact + [0, 1e-6], exact, exact)  # 5e-7: within the 1e-6 floor
    sp.judge(rows, "step 0", "d", exact + 1.0, exact, exact, judged=False)
    assert [r["ok"] for r in rows] == [True, False, True, None]
    assert rows[0]["ours_vs_exact"] == pytest.approx(2e-6) and rows[0]["reference_vs_exact"] == pytest.approx(1e-6)


def test_a_pool_is_the_norm_of_the_differences_over_the_norm_of_the_exact_values():
    rows = []
    sp.judge(rows, "g", "w kernel", np.array([3.0, 0.0]), np.array([3.0, 4.0]), np.array([3.0, 4.0]), judged=False, pooled=True)
    sp.judge(rows, "g", "b bias", np.array([0.0]), np.array([0.0]), np.array([0.0]), judged=False, pooled=True)
    sp.judge(rows, "g", "noise", np.array([9.0]), np.array([0.0]), np.array([0.0]), judged=False)  # not pooled
    sp.pool(rows, "g", "all", floor=0.1)
    sp.pool(rows, "g", "kernels", floor=0.9, pattern="kernel")
    assert rows[-2]["ours_vs_exact"] == pytest.approx(4 / 5)  # √(4² / (3² + 4²)); the unpooled row left out
    assert rows[-2]["reference_vs_exact"] == 0 and rows[-2]["ok"] is False  # 0.8 > max(4 × 0, 0.1)
    assert rows[-1]["ok"] is True  # 0.8 ≤ the floor 0.9


def test_without_the_reference_or_a_recording_it_says_what_it_needs(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / "step_parity.py")], capture_output=True, text=True)
    assert proc.returncode == 2 and "give --ref-venv, --kdef and --ref-work (or an existing --ref-npz)" in proc.stderr


def test_the_stored_results_pass_and_say_what_they_compared():
    """The committed runs (Frappe, EKTF K=3 and K=10, EKTF_L; batch 4096): every judged quantity within its bound."""
    for k in (3, 10):
        r = json.loads((REPO_ROOT / "experiments" / "results" / f"step_parity_frappe_k{k}.json").read_text())
        assert r["failed"] == 0 and r["judged"] == 10 and r["reference"]["k"] == k and r["reference"]["batch"] == 4096
        judged = [row for row in r["rows"] if row["ok"] is not None]
        assert all(row["ok"] for row in judged) and len(judged) == 10
    r = json.loads((REPO_ROOT / "experiments" / "results" / "step_parity_frappe_latest.json").read_text())
    assert r["failed"] == 0 and r["judged"] == 12 and r["reference"]["model"] == "EKTF_L" and r["reference"]["batch"] == 4096
    assert all(row["ok"] for row in r["rows"] if row["ok"] is not None)
    assert {"group0_ipnn", "group1_final", "group2_ecn"} <= {row["name"].split("/")[0].split(":")[-1] for row in r["rows"]}
    r = json.loads((REPO_ROOT / "experiments" / "results" / "step_parity_frappe_k3_clipped.json").read_text())
    assert r["failed"] == 0 and r["judged"] == 10 and r["reference"]["steps"] == 2
    assert r["ours"]["grad_norm"][1] > 10  # the step from the same state is clipped (clip_norm 10)
    for name, judged, model in (("ml100k_k3", 10, "EKTF"), ("ml100k_latest", 12, "EKTF_L")):  # a sequence field: PAD ids
        r = json.loads((REPO_ROOT / "experiments" / "results" / f"step_parity_{name}.json").read_text())
        assert r["failed"] == 0 and r["judged"] == judged and r["reference"]["model"] == model
        assert all(row["ok"] for row in r["rows"] if row["ok"] is not None)
        assert dict(zip(r["reference"]["fields"], r["reference"]["max_lens"]))["genres"] == 5


def test_a_sequence_field_gives_our_model_its_max_len_columns():
    """MovieLens genres (max_len 5, 0 = PAD) is 5 id columns pooled by our model; a recording without
    max_lens (made before they were recorded) is every field one column."""
    meta = _meta()
    assert sp.feature_map(meta).max_lens is None
    meta.update(fields=FIELDS + ["genres"], vocab_sizes=VOCAB + [6], max_lens=[1, 1, 1, 5])
    fm = sp.feature_map(meta)
    assert fm.max_lens == (1, 1, 1, 5) and fm.vocab_sizes == (5, 7, 4, 6)
    model = sp.build_model(sp.our_config(meta).model, fm)
    ids = np.array([[1, 2, 3, 1, 2, 0, 0, 0], [4, 6, 3, 5, 0, 0, 0, 0]], np.int32)
    variables = model.init(jax.random.PRNGKey(0), ids, False)
    from kdef_jax.models.embedding import FeatureEmbedding

    emb = FeatureEmbedding(fm.vocab_sizes, 3, fm.max_lens).apply({"params": variables["params"]["embedding"]}, ids)
    table = np.asarray(variables["params"]["embedding"]["table"])
    genres = 5 + 7 + 4  # the genres table's offset in the one table
    np.testing.assert_allclose(np.asarray(emb)[0, 3], (table[genres + 1] + table[genres + 2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(emb)[1, 3], table[genres + 5], rtol=1e-6)
