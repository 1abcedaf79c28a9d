"""Packaging: what a non-editable install ships and how its metadata reads (fast, offline)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_matches_pyproject():
    import kdef_jax

    assert kdef_jax.__version__ == PYPROJECT["project"]["version"]


def test_license_is_an_spdx_string_with_its_text_and_the_backend_reads_it():
    """setuptools >= 77 warns that the {text = ...} table is deprecated and stops building it after
    2027-02-18; build isolation always fetches the newest setuptools."""
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    req = [r.replace(" ", "") for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert req and int(req[0].split(">=")[1].split(".")[0]) >= 77, req


def test_every_module_folder_is_a_package_that_the_wheel_ships():
    missing = sorted(str(d.relative_to(ROOT)) for d in {p.parent for p in (ROOT / "kdef_jax").rglob("*.py")}
                     if not (d / "__init__.py").is_file())
    assert not missing, f"no __init__.py (not in the wheel): {missing}"


def test_the_package_holds_only_python_files():
    """No package data is configured: a resource file under kdef_jax/ would be missing from a wheel install."""
    stray = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kdef_jax").rglob("*")
                   if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts)
    assert not stray


def test_the_sdist_leaves_out_the_tests_it_could_not_run():
    """setuptools adds tests/test*.py to an sdist by itself, without conftest.py and the helpers they import."""
    assert "prune tests" in (ROOT / "MANIFEST.in").read_text().splitlines()


def test_an_installed_copy_has_no_data_directory_default_inside_its_venv(monkeypatch, tmp_path):
    """repo_root() of a wheel install is site-packages/..: ../shared/data beside it is inside the venv."""
    from kdef_jax.data import dataset

    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    monkeypatch.setattr(dataset, "__file__", str(site / "kdef_jax" / "data" / "dataset.py"))
    monkeypatch.delenv("KDEF_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="set KDEF_DATA_DIR or --config.data.data_dir"):
        dataset.default_data_dir()
    monkeypatch.setenv("KDEF_DATA_DIR", str(tmp_path / "data"))
    assert dataset.default_data_dir() == tmp_path / "data"
