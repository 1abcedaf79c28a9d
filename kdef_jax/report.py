"""Run outputs: the results table, metrics.jsonl lines and the training-curve plot."""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

from kdef_jax.run_files import strict_json, write_atomic


# Vector ISA extensions that decide XLA:CPU's and torch's GEMM speed (recorded with every timing).
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "asimd", "sve")


def student_names(groups) -> list:
    """One name per student, in logit order: the kind alone for a kind's only student, else kind_i with
    i counted over the whole ensemble ("mlp:2,ecn:1,mlp:1" → mlp_0, mlp_1, ecn, mlp_2)."""
    totals = {}
    for g in groups:
        totals[g.kind] = totals.get(g.kind, 0) + g.count
    names, seen = [], {}
    for g in groups:
        for _ in range(g.count):
            i = seen.get(g.kind, 0)
            seen[g.kind] = i + 1
            names.append(g.kind if totals[g.kind] == 1 else f"{g.kind}_{i}")
    return names


def tolerant_stdio() -> None:
    """Console output that cannot fail a command: characters the console's encoding lacks (the tables'
    −, ×, λ under ``PYTHONIOENCODING=ascii`` or a C locale without UTF-8 mode) print as ``\\u2212``
    escapes instead of raising UnicodeEncodeError after the work is done. For command-line entry points."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def console(*parts) -> None:
    """A log line of a run (the default ``log``): written above any progress bar rather than into it
    (``tqdm.write``) and flushed, so a log file followed with ``tail -f`` shows each line as it happens."""
    from tqdm.auto import tqdm

    tqdm.write(" ".join(str(p) for p in parts), file=sys.stdout)
    sys.stdout.flush()


def bar_disabled(progress: bool):
    """tqdm's ``disable`` for a bar the config turns on or off: on, it is drawn on a terminal only (None:
    tqdm checks its stream), since a bar redrawn with carriage returns into a log file is noise."""
    return None if progress else True


def summarize(val: dict, test: dict | None, names: list) -> dict:
    """Rows for the ensemble and every student; best student chosen by VALIDATION AUC."""
    rows = [{"model": "ensemble", "val_auc": val["teacher"]["auc"], "val_logloss": val["teacher"]["logloss"]}]
    for name, s in zip(names, val["students"]):
        rows.append({"model": name, "val_auc": s["auc"], "val_logloss": s["logloss"]})
    if test is not None:
        rows[0].update(test_auc=test["teacher"]["auc"], test_logloss=test["teacher"]["logloss"])
        for r, s in zip(rows[1:], test["students"]):
            r.update(test_auc=s["auc"], test_logloss=s["logloss"])
    aucs = [val["students"][k]["auc"] for k in range(len(names))]
    best = max(range(len(names)), key=lambda k: -math.inf if math.isnan(aucs[k]) else aucs[k])  # NaN: never best
    out = {"rows": rows, "best_student": names[best], "best_student_index": best}
    if test is not None:
        out["ensemble_minus_best_student_test_auc"] = rows[0]["test_auc"] - rows[1 + best]["test_auc"]
        out["ensemble_minus_best_student_test_logloss"] = rows[0]["test_logloss"] - rows[1 + best]["test_logloss"]
    return out


def format_table(summary: dict) -> str:
    cols = ["model", "val_auc", "val_logloss", "test_auc", "test_logloss"]
    lines = ["  ".join(f"{c:>14}" for c in cols)]
    for r in summary["rows"]:
        mark = " *" if r["model"] == summary["best_student"] else ""
        cells = [f"{r['model'] + mark:>14}"] + [f"{r[c]:>14.6f}" if c in r else f"{'-':>14}" for c in cols[1:]]
        lines.append("  ".join(cells))
    lines.append(f"* best student by validation AUC: {summary['best_student']}")
    if "ensemble_minus_best_student_test_auc" in summary:
        lines.append(
            f"ensemble − best student (test): AUC {summary['ensemble_minus_best_student_test_auc']:+.6f}, "
            f"logloss {summary['ensemble_minus_best_student_test_logloss']:+.6f}"
        )
    return "\n".join(lines)


def host_cpu(cpuinfo: str | None = None) -> dict:
    """The host CPU as timings need it: model name, x86 family/model ids, core count and vector ISA.

    Parsed from ``/proc/cpuinfo`` (or the text ``cpuinfo``); elsewhere only ``platform.processor()``.
    Two VMs "of the same class" can differ by CPU generation (Zen 4 vs Zen 5 ran one KDEF step 2x
    apart), so every benchmark JSON records this beside its numbers.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    first, processors = {}, 0
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        if processors <= 1 and key not in first:
            first[key] = value
    flags = set((first.get("flags") or first.get("Features") or "").split())
    out = {"model": first.get("model name") or platform.processor() or platform.machine(),
           "logical_cpus": processors or None,
           "isa": [f for f in _ISA_FLAGS if f in flags]}
    if "cpu family" in first:
        out["family"], out["model_id"] = int(first["cpu family"]), int(first.get("model", -1))
    return out


_PACKAGES = ("kdef-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def software(source: Path | None = None) -> dict:
    """The code a run was made with: the installed versions of kdef-jax and what it trains on, Python's, and
    the git commit of ``source`` (default: this package's checkout; "+dirty" with uncommitted changes;
    None outside a git checkout), so that results from other code are told apart when reused or merged."""
    import importlib.metadata
    import subprocess

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    where = str(source or Path(__file__).resolve().parent)
    try:
        git = lambda *a: subprocess.run(["git", "-C", where, *a], capture_output=True, text=True, timeout=10)  # noqa: E731
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip() if head.returncode == 0 else ""
        out["commit"] = head.stdout.strip() + ("+dirty" if dirty else "") if head.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        out["commit"] = None
    return out


def jsonl_line(record: dict) -> str:
    """One strict-JSON line (NaN, e.g. the AUC of a one-class split, → null)."""
    return json.dumps(strict_json(record), allow_nan=False) + "\n"


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(jsonl_line(record))


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path, dpi: int = 120) -> None:
    """Lay out, write ``fig`` to ``path`` (PNG) atomically (a killed run leaves the old plot or the new one,
    never an empty file beside its results) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        write_atomic(Path(path), lambda fh: fig.savefig(fh, dpi=dpi, format="png"), binary=True)
    finally:
        plt.close(fig)


LEGEND_STUDENTS = 10  # more students: coloured by index along a colour bar, not one legend entry each


def plot_history(history: list, names: list, path: Path, *, best_epoch: int | None = None, title: str = "") -> bool:
    """Validation AUC per epoch (ensemble and students) and train loss; PNG. False if no matplotlib.
    ``best_epoch``: marked on both panels (the epoch the final numbers come from)."""
    plt = pyplot()
    if plt is None:
        return False
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    teacher = a1.plot(epochs, [h["val"]["teacher"]["auc"] for h in history], "k-o", lw=2, label="ensemble (teacher)")
    many = len(names) > LEGEND_STUDENTS
    cmap = plt.get_cmap("viridis")
    for k, name in enumerate(names):  # many students: one colour each along viridis (the default cycle repeats after 10)
        colour = cmap(k / (len(names) - 1)) if many else None
        a1.plot(epochs, [h["val"]["students"][k]["auc"] for h in history], "-o", ms=3, alpha=0.6, label=name, color=colour)
    a1.set_xlabel("epoch"), a1.set_ylabel("validation AUC"), a1.grid(alpha=0.3)
    if many:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.lines import Line2D

        a1.legend(handles=[*teacher, Line2D([], [], color=cmap(0.5), marker="o", ms=3, alpha=0.6,
                                            label=f"{len(names)} students (colour: index)")], fontsize=7)
        bar = fig.colorbar(ScalarMappable(Normalize(0, len(names) - 1), cmap), ax=a1, pad=0.01)
        bar.set_label("student index", fontsize=8)
    else:
        a1.legend(fontsize=7, ncol=2 if len(names) > 6 else 1)
    a2.plot(epochs, [h["train"]["loss"] for h in history], "b-o", label="train objective")
    a2.set_xlabel("epoch"), a2.set_ylabel("train loss"), a2.grid(alpha=0.3)
    a2b = a2.twinx()
    a2b.semilogy(epochs, [h["lr"] for h in history], "r--.", label="learning rate")
    a2b.set_ylabel("learning rate", color="r")
    if best_epoch:
        for ax in (a1, a2):
            ax.axvline(best_epoch, color="0.5", ls=":", lw=1, label=f"best epoch {best_epoch}")
        a1.set_title(f"validation AUC (best epoch {best_epoch}: dotted)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    for ax in (a1, a2):  # whole epochs only (one epoch: a single tick, not 0.96 ... 1.04)
        if len(epochs) <= 15:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    save_figure(fig, path, dpi=110)
    return True
