"""KDEF_Latest (IPNN + FINAL + ECN) on Frappe against the authors' EKTF_L (slow: ~3-5 min; -m slow).

The authors' PyTorch EKTF_L on this split and these settings (configs/kdef_latest_frappe.py) reached
test AUC 0.9538 / 0.9546 / 0.9539 for seeds 2024-2026, its students IPNN 0.9521-0.9531, FINAL
0.9493-0.9515, ECN 0.9411-0.9481. Our 3-seed table: experiments/results/frappe_kdef_latest.md.
"""

import pytest

from conftest import frappe_run_config
from kdef_jax.train import train_and_evaluate

pytestmark = pytest.mark.slow


def test_frappe_kdef_latest_matches_reference(tmp_path):
    c = frappe_run_config("kdef_latest_frappe", tmp_path)
    res = train_and_evaluate(c, tmp_path / "latest", log=lambda *a: None)
    assert res["students"] == ["ipnn", "final", "ecn"]
    assert res["params"]["total"] == 969_285
    test = {r["model"]: r["test_auc"] for r in res["rows"]}
    # ours, seeds 2024-2026: 0.9532 / 0.9545 / 0.9532; seed 2024 (the config's) students 0.9519 / 0.9507 / 0.9399.
    # ECN inside the ensemble is the most seed- and summation-order-sensitive student (0.9399-0.9456 for
    # seed 2024 across our runs; the reference's seeds 0.9411-0.9481), hence its lower floor.
    assert test["ensemble"] > 0.9520, test
    assert test["ensemble"] > max(test["ipnn"], test["final"], test["ecn"]), test  # the teacher beats every student
    assert test["ipnn"] > 0.950 and test["final"] > 0.947 and test["ecn"] > 0.938, test
    assert 8 <= res["epochs_run"] <= 45
