"""Checkpoints: the per-array checksums (hand values), damaged bytes found on restore, read-only opening."""

import json

import flax.struct
import jax.numpy as jnp
import numpy as np
import pytest

from kdef_jax.checkpoint import CheckpointError, Checkpoints, state_checksums


@flax.struct.dataclass
class State:
    step: object
    params: object
    batch_stats: object
    opt_state: object


def _state(scale=1.0):
    return State(jnp.int32(7), {"w": jnp.arange(600, dtype=jnp.float32).reshape(20, 30) * scale, "b": jnp.ones(30)},
                 {"mean": jnp.zeros(30)}, ({"mu": jnp.full((20, 30), 0.5)},))


def test_checksums_are_the_word_sum_and_the_index_weighted_sum_mod_2_32():
    words = jnp.array([1, 2, 3], jnp.uint32)
    got = state_checksums({"f32": words.view(jnp.float32), "i32": jnp.int32(5),
                           "bf16": jnp.ones(2, jnp.bfloat16), "flag": jnp.array([True, False, True]),
                           "wrap": jnp.array([0xFFFFFFFF, 2], jnp.uint32)})
    assert got["['f32']"] == [1 + 2 + 3, 1 * 1 + 2 * 2 + 3 * 3]
    assert got["['i32']"] == [5, 5]
    assert got["['bf16']"] == [2 * 0x3F80, 1 * 0x3F80 + 2 * 0x3F80]  # bf16 1.0 = 0x3F80, widened
    assert got["['flag']"] == [2, 1 + 3]
    assert got["['wrap']"] == [(0xFFFFFFFF + 2) % 2**32, (0xFFFFFFFF + 2 * 2) % 2**32]


def test_checksums_tell_a_swap_and_a_flipped_bit_from_the_original():
    a = jnp.arange(10, dtype=jnp.float32)
    swapped = a.at[2].set(a[3]).at[3].set(a[2])
    flipped = jnp.asarray(a).view(jnp.uint32).at[4].add(1 << 31).view(jnp.float32)
    base = state_checksums({"x": a})["['x']"]
    assert state_checksums({"x": swapped})["['x']"][0] == base[0]  # the plain sum misses a swap ...
    assert state_checksums({"x": swapped})["['x']"][1] != base[1]  # ... the weighted one does not
    assert state_checksums({"x": flipped})["['x']"][0] != base[0]


def _flip_bytes_in_largest_array_file(step_dir):
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    f = max(files, key=lambda p: p.stat().st_size)
    b = bytearray(f.read_bytes())
    mid = len(b) // 2
    for i in range(mid, mid + 16):
        b[i] ^= 0x5A
    f.write_bytes(bytes(b))


def test_restore_returns_the_saved_state_and_meta(tmp_path):
    ck = Checkpoints(tmp_path)
    ck.save(1, _state(), {"epoch": 1, "lr": 0.1}, best_auc=0.7)
    state, meta, step = ck.restore_best(_state(scale=0.0))
    ck.close()
    assert step == 1 and meta == {"epoch": 1, "lr": 0.1}  # the checksums stay inside the checkpoint
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.asarray(_state().params["w"]))
    saved = json.loads((tmp_path / "checkpoints" / "best" / "1" / "meta" / "metadata").read_text())
    assert saved["arrays"]["['params']['w']"] == {
        "shape": [20, 30], "dtype": "float32", "sums": state_checksums({"params": {"w": _state().params["w"]}})["['params']['w']"]}


def test_damaged_array_bytes_are_an_error_naming_the_array(tmp_path):
    ck = Checkpoints(tmp_path)
    ck.save(1, _state(), {"epoch": 1})
    ck.close()
    _flip_bytes_in_largest_array_file(tmp_path / "checkpoints" / "latest" / "1")
    ck = Checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match=r"latest/1 is corrupt: 1 of its 5 arrays \(\['(params|opt_state)'\]"):
        ck.restore_latest(_state())
    ck.close()


def test_a_changed_model_is_named_before_any_array_is_read(tmp_path):
    ck = Checkpoints(tmp_path)
    ck.save(1, _state(), {"epoch": 1})
    other = _state().replace(params={"w": jnp.zeros((20, 31)), "b": jnp.ones(30)})
    with pytest.raises(CheckpointError, match=r"latest/1 was written by a different model/config \(1 arrays differ: "
                                              r"\['params'\]\['w'\]: checkpoint \(20, 30\) float32, this config \(20, 31\) float32\)"):
        ck.restore_latest(other)
    ck.close()


def test_checkpoints_without_checksums_still_restore(tmp_path):
    """Checkpoints of earlier versions have no checksums in their meta: restored unchecked."""
    import orbax.checkpoint as ocp

    from kdef_jax.checkpoint import _state_tree

    ck = Checkpoints(tmp_path)
    ck.latest.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(_state_tree(_state())),
                                              meta=ocp.args.JsonSave({"epoch": 2})), force=True)
    state, meta, step = ck.restore_latest(_state(scale=0.0))
    ck.close()
    assert step == 2 and meta == {"epoch": 2} and float(state.params["w"][1, 0]) == 30.0


def test_reading_a_workdir_without_checkpoints_creates_nothing(tmp_path):
    ck = Checkpoints(tmp_path, create=False)
    assert ck.steps() == {"latest": None, "best": None}
    assert ck.restore_best(_state()) is None
    ck.close()
    assert not (tmp_path / "checkpoints").exists()


def test_restore_checks_the_index_weighted_sum_too(tmp_path):
    """Two words swapped keep the plain sum: only Σi·w tells them apart, and the restore must look at it."""
    from kdef_jax.checkpoint import _state_tree, _verify, array_records

    tree = _state_tree(_state())
    w = tree["params"]["w"]
    swapped = {**tree, "params": {**tree["params"], "w": w.at[0, 0].set(w[0, 1]).at[0, 1].set(w[0, 0])}}
    with pytest.raises(CheckpointError, match=r"x is corrupt: 1 of its 5 arrays \(\['params'\]\['w'\]\)"):
        _verify(swapped, array_records(tree), tmp_path / "x")


def test_a_changed_dtype_or_an_array_missing_from_the_checkpoint_is_a_changed_model(tmp_path):
    ck = Checkpoints(tmp_path)
    ck.save(1, _state(), {"epoch": 1})
    half = _state().replace(params={"w": jnp.zeros((20, 30), jnp.float16), "b": jnp.ones(30)})
    with pytest.raises(CheckpointError, match=r"\['params'\]\['w'\]: checkpoint \(20, 30\) float32, this config \(20, 30\) float16"):
        ck.restore_latest(half)
    more = _state().replace(params={**_state().params, "extra": jnp.zeros(3)})
    with pytest.raises(CheckpointError, match=r"\['params'\]\['extra'\]: not in the checkpoint"):
        ck.restore_latest(more)
    ck.close()


def test_best_keeps_its_newest_save_and_resume_takes_the_later_of_the_two(tmp_path):
    """The plateau rule decides what is best: a later best save replaces an earlier one even with a
    lower AUC (a resumed run with another rate); best one epoch ahead of latest (a crash between the
    two saves) is what resume continues from."""
    ck = Checkpoints(tmp_path)
    ck.save(3, _state(scale=3.0), {"epoch": 3}, best_auc=0.9)
    ck.save(5, _state(scale=5.0), {"epoch": 5}, best_auc=0.8)
    assert ck.steps() == {"latest": 5, "best": 5}
    real_latest_save, ck.latest.save = ck.latest.save, lambda *a, **k: None  # dies before latest's save
    ck.save(6, _state(scale=6.0), {"epoch": 6}, best_auc=0.85)
    ck.latest.save = real_latest_save
    assert ck.steps() == {"latest": 5, "best": 6}
    state, meta, step, which = ck.restore_newest(_state(scale=0.0))
    assert (step, which, meta) == (6, "best", {"epoch": 6}) and float(state.params["w"][0, 1]) == 6.0
    ck.save(7, _state(scale=7.0), {"epoch": 7})
    assert ck.restore_newest(_state(scale=0.0))[2:] == (7, "latest")
    ck.close()


def test_best_is_the_highest_validation_auc_not_the_latest_epoch(tmp_path):
    ck = Checkpoints(tmp_path)
    ck.save(1, _state(scale=1.0), {"epoch": 1}, best_auc=0.7)
    ck.save(2, _state(scale=2.0), {"epoch": 2}, best_auc=0.8)
    ck.save(3, _state(scale=3.0), {"epoch": 3})  # no improvement: saved as latest only
    state, meta, step = ck.restore_best(_state(scale=0.0))
    latest = ck.restore_latest(_state(scale=0.0))
    ck.close()
    assert (step, meta) == (2, {"epoch": 2}) and float(state.params["w"][0, 1]) == 2.0
    assert latest[2] == 3 and float(latest[0].params["w"][0, 1]) == 3.0


def test_restore_newest_takes_latest_on_a_tie(tmp_path):
    """K1: best == latest (every improving epoch) resumes from latest, not 'best, which is ahead'."""
    ck = Checkpoints(tmp_path)
    ck.save(1, _state(), {"epoch": 1}, best_auc=0.7)
    try:
        assert ck.steps() == {"latest": 1, "best": 1}
        assert ck.restore_newest(_state(scale=0.0))[2:] == (1, "latest")
    finally:
        ck.close()


def test_a_damaged_meta_file_is_a_checkpoint_error_naming_it(tmp_path):
    """K11: the meta JSON is read first; its damage is a CheckpointError (main/score_run/export_run print
    CheckpointErrors as one line), not some other exception."""
    ck = Checkpoints(tmp_path)
    ck.save(1, _state(), {"epoch": 1})
    ck.close()
    (tmp_path / "checkpoints" / "latest" / "1" / "meta" / "metadata").write_text('{"trunc')
    ck = Checkpoints(tmp_path)
    try:
        with pytest.raises(CheckpointError, match=r"cannot read the latest checkpoint .*latest/1: it is corrupt"):
            ck.restore_latest(_state())
    finally:
        ck.close()
