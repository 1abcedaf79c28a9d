"""README numbers that are computed from committed or shared files equal what those files give."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from conftest import REPO_ROOT, shared_data_dir

README = REPO_ROOT / "README.md"


def test_the_authors_plain_mlp_movielens_mean_is_the_mean_of_their_three_runs():
    """The reference's DNN on MovieLens-100K, seeds 2024-2026: 0.8419847, 0.8250379, 0.8537639 → 0.8403."""
    fits = shared_data_dir().parent / "reference" / "bench" / "results" / "ml100k_fits.jsonl"
    if not fits.is_file():
        pytest.skip(f"the reference runs are not here ({fits}); set KDEF_DATA_DIR beside shared/reference")
    records = [json.loads(line[line.index("{"):]) for line in fits.read_text().splitlines() if "{" in line]
    aucs = [r["test"]["AUC"] for r in records if r["model"] == "DNN"]
    assert len(aucs) == 3
    row = next(line for line in README.read_text().splitlines() if line.startswith("| MovieLens-100K | plain MLP"))
    shown = re.findall(r"\| (0\.\d{4}) \(", row)[-1]
    assert shown == f"{statistics.fmean(aucs):.4f}"
    table = (REPO_ROOT / "experiments" / "results" / "ml100k_k3_vs_k1.md").read_text()
    assert f"| {shown} mean (" in table


def test_the_k2_distance_range_of_the_plain_ensembles_is_that_of_the_ipnn_and_final_runs():
    """The README's IPNN/FINAL K=2 sentence: the plain (mean) ensemble's D over Frappe and MovieLens."""
    ds = []
    for data in ("frappe", "ml100k"):
        for kind in ("ipnn", "final"):
            record = json.loads((REPO_ROOT / "experiments" / "results" / f"{data}_{kind}_findings.json").read_text())
            ds.append(record["mean"]["2"]["mean"]["distance_to_ensemble"])
    text = " ".join(README.read_text().split())
    assert f"against the plain ensemble's {min(ds):.3f}-{max(ds):.3f}" in text


def test_the_collective_bytes_table_is_the_committed_measurement():
    """README "Many devices": every row of the collective-bytes table is benchmarks/results/collective_bytes_cpu8.json
    (the temporaries drifted once when the step changed and the table was not remade)."""
    record = json.loads((REPO_ROOT / "benchmarks" / "results" / "collective_bytes_cpu8.json").read_text())
    names = {"dense": "dense Adam", "lazy_adam": "lazy Adam"}
    text = README.read_text()
    for r in record["results"]:
        row = next(line for line in text.splitlines() if line.strip().startswith(f"| {names[r['optimizer']]}, {r['embedding']} |"))
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert cells[1].split()[0] == f"{r['collective_mb_per_step']:.1f}", row
        assert cells[2:] == [f"{r['argument_mb_per_device']:.1f}", f"{r['temp_mb_per_device']:.1f}"], row


def test_the_latency_timings_compared_are_the_committed_runs():
    """README "Performance": the waited-for vs back-to-back latencies are the two 2026-12-07 files."""
    runs = {}
    for name, timing in (("latency_cpu_20261207", "each call waited for"), ("latency_cpu_20261207_pipelined", "pipelined")):
        record = json.loads((REPO_ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        assert record["timing"] == timing and record["args"]["pipelined"] == (timing == "pipelined")
        runs[timing] = {r["batch"]: r for r in record["rows"]}
    waited, piped = runs["each call waited for"], runs["pipelined"]
    text = " ".join(README.read_text().split())
    assert (f"one student at batch 1 {waited[1]['one_student']['ms']:.2f} ms vs {piped[1]['one_student']['ms']:.2f}, "
            f"the ensemble {waited[1]['ensemble']['ms']:.2f} vs {piped[1]['ensemble']['ms']:.2f} ms") in text
    assert (f"{waited[10000]['one_student_speedup']:.2f}× faster than the ensemble at 10,000 waited for, "
            f"{piped[10000]['one_student_speedup']:.2f}× back to back") in text
    for b in (256, 10000):
        for who in ("ensemble", "one_student"):
            assert abs(waited[b][who]["ms"] / piped[b][who]["ms"] - 1) < 0.06, (b, who)


def test_the_gzip_preprocessing_speed_is_the_committed_pair_of_runs():
    """README "Preprocessing": rows/s from gzip vs plain are the two 2026-12-08 files, one machine, same rows."""
    plain, packed = (json.loads((REPO_ROOT / "benchmarks" / "results" / f"preprocess_{k}_20261208.json").read_text())
                     for k in ("plain", "gzip"))
    assert plain["cpu"] == packed["cpu"] and (plain["compress"], packed["compress"]) == (None, "gzip")
    (p,), (g,) = plain["runs"], packed["runs"]
    assert p["rows"] == g["rows"] == 1_000_000 and p["num_rows"] == g["num_rows"] and g["compression"] == "gzip"
    text = " ".join(README.read_text().split())
    assert (f"1M rows preprocess at {g['rows_per_s'] / 1e6:.2f}M rows/s from gzip vs {p['rows_per_s'] / 1e6:.2f}M "
            f"from the plain file") in text
    rss = abs(g["peak_rss_mb"] / p["peak_rss_mb"] - 1) * 100
    assert f"peak RSS the same within {rss:.0f}%" in text


def test_the_zen4_side_by_side_rerun_is_the_committed_record():
    """README "Performance": the 2026-12-08 Zen 4 re-run's speed-ups and samples/s are its JSON's medians."""
    record = json.loads((REPO_ROOT / "benchmarks" / "results" / "cpu_zen4" / "side_by_side_cpu_20261208.json").read_text())
    rows = [record["summary"][case] for case in ("mlp_k1", "kdef_k3", "kdef_k10", "kdef_latest")]
    assert record["cpu"]["family"] == 25 and record["rounds"] == 3
    text = " ".join(README.read_text().split())
    assert "**" + " / ".join(f"{r['speedup']:.2f}×" for r in rows) + "**" in text
    assert ("(ours " + " / ".join(f"{r['ours_samples_per_s']:,.0f}" for r in rows) + " samples/s, the reference "
            + " / ".join(f"{r['reference_samples_per_s']:,.0f}" for r in rows)) in text
