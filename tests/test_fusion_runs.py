"""The ensemble baselines end to end: a run trained with ``loss.variant`` "sum", "mean_prob" or "concat"
evaluates, reports and exports the ensemble its loss trained (σ(Σ_k z_k), mean_k σ(z_k), σ of the concat
head's logit), not σ(mean z)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from run_helpers import tiny_config

from kdef_jax.data.dataset import load_dataset
from kdef_jax.export import load_run, make_predictor
from kdef_jax.export_run import main as export_main
from kdef_jax.metrics import auc, logloss, sigmoid64
from kdef_jax.train import train_and_evaluate

# the ensemble probability of each fusion from the model's logits [K, N] ([K + 1, N] with the concat head), by hand
BY_HAND = {"mean_logit": lambda z: sigmoid64(z.mean(0)), "sum_logit": lambda z: sigmoid64(z.sum(0)),
           "mean_prob": lambda z: sigmoid64(z).mean(0), "concat": lambda z: sigmoid64(z[-1])}


@pytest.fixture(scope="module", params=[("sum", "sum_logit"), ("mean_prob", "mean_prob"), ("concat", "concat")],
                ids=lambda p: p[0])
def baseline_run(request, tmp_path_factory):
    variant, fusion = request.param
    tmp = tmp_path_factory.mktemp(variant)
    # lr 0.03: logits far enough from 0 that mean_k σ(z_k) and σ(mean z) differ in the 4th decimal
    # consistency "kl": these baselines have no KD/DML term, so it changes nothing but a warning
    c = tiny_config(tmp, **{"loss.variant": variant, "train.num_epochs": 1, "optim.learning_rate": 0.03,
                            "loss.consistency": "kl"})
    said = LOGS.setdefault(variant, [])
    return c, tmp / "run", train_and_evaluate(c, tmp / "run", log=lambda *a: said.append(" ".join(map(str, a)))), fusion


LOGS = {}  # variant: its run's log lines


def test_a_consistency_loss_the_variant_does_not_use_is_a_warning(baseline_run):
    c = baseline_run[0]
    assert any(l.startswith("[config] warning: loss.consistency / loss.huber_delta have no effect under "
                            f"loss.variant={c.loss.variant!r}") for l in LOGS[c.loss.variant])


def test_the_run_reports_its_own_ensemble(baseline_run):
    c, workdir, res, fusion = baseline_run
    assert res["variant"] == c.loss.variant and res["fusion"] == fusion
    model, variables, _, results = load_run(workdir)
    assert results["fusion"] == fusion
    test = load_dataset(c.data, log=lambda *a: None).splits["test"]
    z = np.asarray(model.apply(variables, jnp.asarray(test.x), False, None), np.float64)
    ens = res["rows"][0]
    assert ens["model"] == "ensemble"
    assert ens["test_logloss"] == pytest.approx(logloss(test.y, BY_HAND[fusion](z)), rel=1e-6)
    assert ens["test_auc"] == pytest.approx(auc(test.y, BY_HAND[fusion](z)), abs=1e-4)
    # and not the KDEF teacher's σ(mean z): its logloss is another number on the same logits
    students = z[:-1] if fusion == "concat" else z
    assert len(students) == res["num_students"] == 3
    assert abs(ens["test_logloss"] - logloss(test.y, BY_HAND["mean_logit"](students))) > 1e-4
    for k, row in enumerate(res["rows"][1:]):  # every student is its own row's σ(z_k)
        assert row["test_logloss"] == pytest.approx(logloss(test.y, sigmoid64(students[k])), rel=1e-6)


def test_export_run_serves_the_runs_ensemble(baseline_run, tmp_path, capsys):
    c, workdir, res, fusion = baseline_run
    out = tmp_path / "ensemble.jaxexport"
    assert export_main(["--workdir", str(workdir), "--out", str(out)]) == 0
    capsys.readouterr()
    info = json.loads(out.with_name("ensemble.jaxexport.json").read_text())
    assert info["what"] == "ensemble" and info["fusion"] == fusion
    assert info["test_auc"] == res["rows"][0]["test_auc"]  # the ensemble's row, not a student's
    model, variables, _, _ = load_run(workdir)
    x = jnp.asarray(load_dataset(c.data, log=lambda *a: None).splits["test"].x)
    z = np.asarray(model.apply(variables, x, False, None), np.float64)
    served = np.asarray(jax.export.deserialize(out.read_bytes()).call(x))
    np.testing.assert_allclose(served, BY_HAND[fusion](z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(make_predictor(model, variables, fusion=fusion)(x), served, rtol=1e-6, atol=1e-7)


def test_make_predictor_refuses_an_unknown_fusion(baseline_run):
    _, workdir, _, _ = baseline_run
    model, variables, _, _ = load_run(workdir)
    with pytest.raises(ValueError, match="'median'"):
        make_predictor(model, variables, fusion="median")
