"""A run's files (kdef_jax/run_files.py): JSON read with errors naming the file, outputs checked and
written atomically, strict JSON out, config changes between a run and its resume."""
import json
import re
from pathlib import Path

import pytest
from data_helpers import write_file

from kdef_jax.config import base_config


def test_read_json_names_a_file_that_is_not_text(tmp_path):
    """R3: undecodable bytes (a binary or truncated file) are a ValueError naming the file."""
    from kdef_jax.run_files import read_json

    p = write_file(tmp_path / "config.json", b"\xff\xfe{\x00")
    with pytest.raises(ValueError, match=re.escape(f"{p}: not valid JSON")):
        read_json(p)


def test_read_run_config_needs_the_model_and_train_sections(tmp_path):
    """R4: a config.json without model/train is not a run's (load_run would fail later on config.model)."""
    from kdef_jax.run_files import read_run_config

    (tmp_path / "config.json").write_text('{"data": {}, "model": {}}')
    with pytest.raises(ValueError, match="not a kdef_jax run config"):
        read_run_config(tmp_path)
    (tmp_path / "config.json").write_text('{"data": {}, "train": {}}')
    with pytest.raises(ValueError, match="not a kdef_jax run config"):
        read_run_config(tmp_path)


def test_write_atomic_leaves_nothing_behind_when_the_writer_fails(tmp_path):
    """R5: a failing write leaves neither the output nor its temporary file."""
    from kdef_jax.run_files import write_atomic

    def dies(fh):
        fh.write("half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "out.csv", dies)
    assert list(tmp_path.iterdir()) == []


def test_write_json_writes_infinities_as_null(tmp_path):
    """R6: ±inf (a logloss of a saturated prediction) is null like NaN: strict JSON either way."""
    from kdef_jax.run_files import write_json

    write_json(tmp_path / "x.json", {"a": float("inf"), "b": [float("-inf"), 1.5], "c": float("nan")})
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}")) == {"a": None, "b": [None, 1.5], "c": None}


def test_config_changes_ignores_resume(tmp_path):
    """R7: resume=True is how every resume starts; it is not a config change to log."""
    from kdef_jax.run_files import config_changes

    (tmp_path / "config.json").write_text(base_config().to_json())
    c = base_config()
    c.resume = True
    assert config_changes(tmp_path, c) == {}
    c.train.num_epochs = 5
    assert config_changes(tmp_path, c) == {"train.num_epochs": (100, 5)}


def test_check_output_refuses_a_json_side_file_that_is_a_directory(tmp_path):
    """score_run / export_run write <out> and then <out>.json: a directory there is refused before anything
    is written (it was accepted, and the command died with IsADirectoryError after writing <out>)."""
    from kdef_jax.run_files import check_output

    (tmp_path / "s.csv.json").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        check_output(tmp_path / "s.csv", "--out")


def test_a_run_from_before_data_pandas_na_is_read_with_it_off(tmp_path):
    """Its config.json has no data.pandas_na: that run read "NA", "null", ... as tokens, so scoring must too."""
    from kdef_jax.run_files import read_run_config

    c = base_config()
    del c.data["pandas_na"]
    (tmp_path / "config.json").write_text(c.to_json())
    assert read_run_config(tmp_path).data.pandas_na is False
    (tmp_path / "config.json").write_text(base_config().to_json())
    assert read_run_config(tmp_path).data.pandas_na is True


def test_a_device_given_as_an_output_is_written_in_place_never_replaced(monkeypatch):
    """--out /dev/null: a temporary renamed over it would replace the device (as root) with a file."""
    import os

    from kdef_jax import run_files

    renamed = []
    monkeypatch.setattr(os, "replace", lambda a, b: renamed.append((a, b)))
    run_files.write_json(Path("/dev/null"), {"a": float("nan")})
    assert renamed == []


# Found by damaging each file of a finished run (corruption fuzzing): these were tracebacks.
@pytest.mark.parametrize("text", ['[]', '{"data": {}, "model": {}, "train": {}}', "5"])
def test_a_config_json_without_a_runs_sections_is_an_error_naming_it_for_readers_and_resume(tmp_path, text):
    from kdef_jax.run_files import config_changes, read_run_config

    (tmp_path / "config.json").write_text(text)
    for read in (lambda: read_run_config(tmp_path), lambda: config_changes(tmp_path, base_config())):
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'}: not a kdef_jax run config")):
            read()


def test_a_key_a_runs_config_json_lacks_takes_the_default_it_ran_with():
    """A run predating a key (here data.split_seed and model.embedding_rows) did what the default does;
    reading such a key raised AttributeError in score_run and export_run."""
    import tempfile

    from kdef_jax.run_files import read_run_config

    c = base_config()
    c.data.split_seed, c.model.num_students = 7, 5
    raw = json.loads(c.to_json())
    del raw["data"]["split_seed"], raw["model"]["embedding_rows"]
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.json").write_text(json.dumps(raw))
        got = read_run_config(d)
    assert (got.data.split_seed, got.model.embedding_rows, got.model.num_students) == (2018, 0, 5)


def test_disk_full_knows_enospc_edquot_and_orbaxs_wrapped_error_only():
    import errno
    from kdef_jax.run_files import disk_full, error_text

    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert disk_full(ValueError("RESOURCE_EXHAUSTED: Failed to write 52286 bytes to file 23: No space left on device"))
    assert not disk_full(OSError(errno.EIO, "Input/output error")) and not disk_full(ValueError("config x: bad"))
    assert not disk_full(RuntimeError("No space left on device"))  # not a write error of ours
    assert error_text("p", ValueError("bad")) == "p: error: ValueError: bad"
    assert error_text("p", OSError(errno.ENOSPC, "No space left on device", "o.csv")) == (
        "p: error: OSError: [Errno 28] No space left on device: 'o.csv'\n"
        "p: the disk is full: free space on it (or use a larger one), then run the command again")


def test_check_writable_refuses_a_folder_and_a_path_through_a_file_before_any_work(tmp_path):
    from kdef_jax.run_files import check_writable

    (tmp_path / "f").write_text("kept")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"--out .*/d is a directory; give a file name"):
        check_writable(tmp_path / "d", "--out")
    with pytest.raises(ValueError, match=r"--out .*/f/sub/x.json: .*/f is a file, not a folder"):
        check_writable(tmp_path / "f" / "sub" / "x.json", "--out")
    assert check_writable(tmp_path / "new" / "deeper" / "x.json", "--out") == tmp_path / "new" / "deeper" / "x.json"
    assert check_writable(tmp_path / "f", "--out") == tmp_path / "f"  # an existing file is replaced when written
    assert (tmp_path / "f").read_text() == "kept" and not (tmp_path / "new").exists()  # a check writes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]  # its probe file is gone


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_check_writable_refuses_a_folder_where_no_file_can_be_created_though_access_allows_it():
    """/proc passes os.access(W_OK) for root; before, a command ran its whole job, then its write failed
    with a traceback."""
    from kdef_jax.run_files import check_writable

    with pytest.raises(ValueError, match=r"--out /proc/x\.json: no file can be created in /proc \("):
        check_writable(Path("/proc/x.json"), "--out")


def test_write_atomic_names_the_file_of_an_error_that_names_none(tmp_path):
    """EFBIG (a ulimit -f) carries no file name: a run ended in a traceback instead of one line naming it."""
    import errno

    from kdef_jax.run_files import reported, write_atomic

    def too_large(fh):
        raise OSError(errno.EFBIG, "File too large")

    with pytest.raises(OSError) as e:
        write_atomic(tmp_path / "vocab.json", too_large)
    assert e.value.errno == errno.EFBIG and e.value.filename == str(tmp_path / "vocab.json") and reported(e.value)
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_a_plot_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """Before: savefig wrote curves.png in place, and a kill left an empty file beside a finished run's results."""
    pytest.importorskip("matplotlib")
    from kdef_jax.report import pyplot, save_figure

    plt, path = pyplot(), tmp_path / "curves.png"
    fig = plt.figure()
    save_figure(fig, path)
    good = path.read_bytes()
    assert good.startswith(b"\x89PNG")
    fig = plt.figure()
    monkeypatch.setattr(fig, "savefig", lambda fh, **kw: (fh.write(b"\x89PNG half"), (_ for _ in ()).throw(KeyboardInterrupt()))[1])
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["curves.png"]
