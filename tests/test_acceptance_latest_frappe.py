"""KDEF_Latest (IPNN + FINAL + ECN) on Frappe against the authors' EKTF_L, seeds 2024-2026 (slow: ~4-8 min; -m slow).

The authors' PyTorch EKTF_L on this split and these settings (configs/kdef_latest_frappe.py) reached
test AUC 0.9538 / 0.9546 / 0.9539 for seeds 2024-2026 (mean 0.9541), its students IPNN 0.9521-0.9531,
FINAL 0.9493-0.9515, ECN 0.9411-0.9481. Our 3-seed table: experiments/results/frappe_kdef_latest.md.

The gates are on the 3-seed means because one seed's AUC moves with floating-point rounding alone, and
rounding differs between code versions and between host CPUs (XLA:CPU's vector width and FMA
contraction): seed 2024's ensemble read 0.9516 to 0.9532 under versions of the code that differ by
≤ 1 ulp per step, and one version (commit 9265e36's scalar clipping factor, which gives the current
code's numbers on a Zen 5) read 0.9516 on a Zen 3 host and 0.9531 on a Zen 5: a spread that straddles
any single-seed gate near the reference. The 3-seed means of those versions: 0.9531-0.9541.
"""

import statistics

import pytest

from conftest import frappe_run_config
from kdef_jax.train import train_and_evaluate

pytestmark = pytest.mark.slow

SEEDS = (2024, 2025, 2026)
STUDENTS = ("ipnn", "final", "ecn")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{seed: results} of the three runs (each ~70-150 s on 2 CPU cores)."""
    out = {}
    for seed in SEEDS:
        tmp = tmp_path_factory.mktemp(f"latest_{seed}")
        c = frappe_run_config("kdef_latest_frappe", tmp)
        c.seed = seed
        out[seed] = train_and_evaluate(c, tmp / "run", log=lambda *a: None)
    return out


def _test_auc(res) -> dict:
    return {r["model"]: r["test_auc"] for r in res["rows"]}


def _means(runs) -> dict:
    return {m: statistics.mean(_test_auc(r)[m] for r in runs.values()) for m in ("ensemble", *STUDENTS)}


def test_each_run_is_the_reference_model_and_converges(runs):
    for seed, res in runs.items():
        assert res["students"] == list(STUDENTS), seed
        assert res["params"]["total"] == 969_285, seed
        assert 8 <= res["epochs_run"] <= 45, (seed, res["epochs_run"])
        assert _test_auc(res)["ensemble"] > 0.9500, (seed, _test_auc(res))  # every seed near the reference's 0.9538-0.9546


def test_ensemble_mean_matches_reference(runs):
    means = _means(runs)
    # reference mean 0.9541; ours 0.9531-0.9541 across code versions that differ only in rounding
    assert means["ensemble"] > 0.9525, means


def test_teacher_beats_every_student_and_students_match_reference(runs):
    means = _means(runs)
    assert means["ensemble"] > max(means[s] for s in STUDENTS), means
    # reference means IPNN 0.9526, FINAL 0.9507, ECN 0.9447; ours 0.9520 / 0.9496 / 0.9422 (the current code,
    # Zen 5). ECN inside the ensemble is the most seed- and rounding-sensitive student (0.9396-0.9456 per seed
    # across versions), hence its lower floor.
    assert means["ipnn"] > 0.9500 and means["final"] > 0.9470 and means["ecn"] > 0.9380, means
