"""Config defaults, command-line overrides and validate: every value a run cannot use is an error naming
its key; the legal edge values pass (cases from mutation testing of kdef_jax/config.py)."""

import math
import re

import ml_collections
import pytest

from conftest import load_config_module
from kdef_jax.config import (UnknownKeyError, apply_overrides, base_config, check_overrides_are_read, load_config_file,
                             use_ektf, validate)
from kdef_jax.run_files import flat_dict


def _set(c, key: str, value) -> None:
    """c.<key> = value for a dotted key."""
    *path, leaf = key.split(".")
    node = c
    for part in path:
        node = node[part]
    node[leaf] = value


def _validate_error(settings: dict) -> str:
    """validate's error for base_config() with ``settings`` {dotted key: value}."""
    c = base_config()
    for key, value in settings.items():
        _set(c, key, value)
    with pytest.raises(ValueError) as e:
        validate(c)
    return str(e.value)


def test_the_reference_schedule_defaults():
    """README: the plateau cuts the rate x0.1, clipping at 10 (mutants: patience 3, lr_decay 0.5, clip 0)."""
    o = base_config().optim
    assert (o.learning_rate, o.lr_decay, o.patience, o.min_lr, o.clip_norm) == (1e-3, 0.1, 2, 1e-6, 10.0)


def test_use_ektf_applies_every_setting_it_is_given():
    """KDD12 (dropout 0, K=5) and Criteo (batch 10,000): a use_ektf that drops dropout or batch_size survived."""
    c = use_ektf(base_config(), embedding_l2=1e-5, batch_size=10_000, num_students=5, embedding_dim=8,
                 hidden_units=[32, 16], dropout=0.0)
    assert (c.model.num_students, c.model.embedding_dim, c.model.hidden_units, c.model.dropout) == (5, 8, (32, 16), 0.0)
    assert (c.optim.embedding_l2, c.train.batch_size) == (1e-5, 10_000)
    kdd = load_config_module("kdd12").get_config()
    assert (kdd.model.dropout, kdd.model.num_students, kdd.train.batch_size) == (0.0, 5, 10_000)


def test_tuple_overrides_keep_integer_widths_and_accept_brackets():
    """(int, float) order: "(8,4)" must give ints (a float-first parse gives (8.0, 4.0), equal but
    rejected by validate); "[8,4]" is accepted as the tuple it names."""
    c = base_config()
    apply_overrides(c, ["model.hidden_units=(8,4)"])
    assert c.model.hidden_units == (8, 4) and all(type(u) is int for u in c.model.hidden_units)
    validate(c)
    apply_overrides(c, ["model.hidden_units=[16, 2]"])
    assert c.model.hidden_units == (16, 2)
    apply_overrides(c, ["data.split_fractions=(0.7,0.2,0.1)"])
    assert c.data.split_fractions == (0.7, 0.2, 0.1)


def test_float_overrides_take_exponent_notation():
    """optim.learning_rate=1e-4 (a mutant parsing float fields with int() rejected it)."""
    c = base_config()
    apply_overrides(c, ["optim.learning_rate=1e-4", "optim.embedding_l2=0.5"])
    assert c.optim.learning_rate == 1e-4 and c.optim.embedding_l2 == 0.5


def test_an_untyped_field_gets_a_bool_from_true_and_false():
    """A field without a typed value (None, e.g. in a config's free-form field_options) is parsed by _parse_value."""
    cd = ml_collections.ConfigDict({"a": None, "b": None})
    apply_overrides(cd, ["a=True", "b=(1,x,False)"])
    assert cd.a is True and cd.b == (1, "x", False)


def test_unknown_override_key_is_a_value_error_with_a_plain_message():
    c = base_config()
    with pytest.raises(ValueError) as e:  # the command line's bad-value handlers catch ValueError
        apply_overrides(c, ["train.nope=1"])
    assert isinstance(e.value, KeyError) and isinstance(e.value, UnknownKeyError)
    assert str(e.value).startswith("unknown config key 'train.nope' (no 'nope' under train; valid: batch_size,")  # not KeyError's quoted repr


@pytest.mark.parametrize("key,part,hint", [
    ("model.num_student", "num_student", "did you mean 'model.num_students'? "),
    ("modle.dropout", "modle", "did you mean 'model'? "),
    ("model.ecn.num_cross_layer", "num_cross_layer", "did you mean 'model.ecn.num_cross_layers'? "),
    ("train.zzz", "zzz", ""),
])
def test_a_misspelt_key_names_the_closest_valid_one(key, part, hint):
    from kdef_jax.config import unknown_key
    msg = unknown_key(base_config(), key)
    assert msg.startswith(f"unknown config key {key!r} (no {part!r} under ") and f"; {hint}valid: " in msg
    assert unknown_key(base_config(), "model.ecn.num_cross_layers") is None


def test_unknown_config_keys_are_all_named_first_in_sorted_order():
    c = base_config()
    with c.unlocked():
        c.train.batchsize, c.optim.aaa = 1, 2
    with pytest.raises(ValueError) as e:
        validate(c)
    assert str(e.value) == ("config optim.aaa: is not a config key (misspelt? every key is listed in "
                            "kdef_jax/config.py:base_config); other unknown keys: train.batchsize")
    with c.unlocked():
        del c.optim.aaa
    with pytest.raises(ValueError, match=r"^config train.batchsize: is not a config key \(did you mean 'train.batch_size'\? every"):
        validate(c)


def test_a_student_group_error_is_not_prefixed_twice():
    c = base_config()
    c.model.students = "mlp:0"
    with pytest.raises(ValueError) as e:
        validate(c)
    assert str(e.value) == "config model.students / num_students: need 1 to 2**31 - 1 students per group, got 'mlp:0'"


@pytest.mark.parametrize("key,value,message", [
    ("loss.consistency", "nope", "config loss.consistency: 'nope' is not one of"),
    ("model.ecn.dropout", 1.0, "config model.ecn.dropout: must be in [0, 1), got 1.0"),
    ("model.dropout_rng", "nope", "config model.dropout_rng: 'nope' is not one of hash, jax"),
    ("model.group_impl", "nope", "config model.group_impl: 'nope' is not one of auto, vmap, unrolled"),
    ("model.compute_dtype", "float16", "config model.compute_dtype: 'float16' is not one of float32, bfloat16"),
    ("model.hidden_units", (16, 0), "config model.hidden_units: widths must be in [1, 2**31), got (16, 0)"),
    ("optim.learning_rate", math.inf, "config optim.learning_rate: must be a finite number > 0, got inf"),
    ("optim.eps", 0.0, "config optim.eps: must be a finite number > 0, got 0.0"),
    ("loss.huber_delta", 0.0, "config loss.huber_delta: must be a finite number > 0, got 0.0"),
    ("optim.embedding_optimizer", "sparse", "config optim.embedding_optimizer: 'sparse' is not one of dense, lazy_adam"),
    ("mesh.embedding", "cols", "config mesh.embedding: 'cols' is not one of replicated, rows"),
    ("model.embedding_rows", -1, "config model.embedding_rows: must be an integer in [0, 2**31)"),
    ("distributed.coordinator", None, "config distributed.coordinator: must be a string, got None"),
    ("data.synthetic.positive_rate", 0.0, "config data.synthetic.positive_rate: must be in (0, 1), got 0.0"),
    ("data.split", "kfold", "config data.split: 'kfold' is not one of files, mod, random"),
    ("data.engine", "fast", "config data.engine: 'fast' is not one of auto, native, columnar, python"),
    ("data.on_bad_rows", "warn", "config data.on_bad_rows: 'warn' is not one of error, skip"),
    ("data.delimiter", "\r", "config data.delimiter: must be one character other than a line break"),
    ("data.quotechar", "''", "config data.quotechar: must be '' (no quoting) or one character other than the delimiter"),
    ("data.split_fractions", (0.8, math.inf, 0.1), "config data.split_fractions: must be 3 finite numbers >= 0"),
])
def test_more_values_the_run_cannot_use_name_their_key(key, value, message):
    assert message in _validate_error({key: value})


_LEAVES = flat_dict(base_config().to_dict())


@pytest.mark.parametrize("key", sorted(_LEAVES))
def test_every_key_set_to_none_is_an_error_naming_it(key):
    """A config file or API caller can put None in any key (train.log_every=None used to be a TypeError
    inside validate); ConfigDict itself refuses other cross-type values, except a bool in an int key."""
    assert f"config {key}: must be " in _validate_error({key: None})


@pytest.mark.parametrize("key", sorted(k for k, v in _LEAVES.items() if type(v) is int))
def test_every_integer_key_set_to_a_bool_is_an_error_naming_it(key):
    """model.embedding_dim=True used to train a table 1 wide."""
    assert _validate_error({key: True}) == f"config {key}: must be an integer, got True"


# Found by a review of every key's values through the command line and validate (2026-12-07): each passed
# validate and then failed later with a traceback, a segfault, a hang, or a run that silently learnt nothing.
@pytest.mark.parametrize("settings,message", [
    ({"optim.eps": 1e39}, "config optim.eps: must be below 3.4e38 in size (it is used as a float32, where 1e+39 is inf)"),
    ({"optim.learning_rate": 1e39}, "config optim.learning_rate: must be below 3.4e38"),
    ({"loss.huber_delta": 1e39}, "config loss.huber_delta: must be below 3.4e38"),
    ({"optim.min_delta": 1.5}, "config optim.min_delta: must be in [0, 1] (the validation AUC gain"),
    ({"model.embedding_rows": 2**31}, "config model.embedding_rows: must be an integer in [0, 2**31)"),
    ({"data.synthetic.num_train": 2**31}, "config data.synthetic.num_train: must be in [1, 2**31)"),
    ({"data.split": "mod", "data.valid_mod": 10**20}, "config data.valid_mod: split='mod' needs valid_mod in [2, 2**31)"),
    ({"data.encoding": "rot13"}, "config data.encoding: 'rot13' is not a text encoding"),
    ({"data.encoding": "hex"}, "config data.encoding: 'hex' is not a text encoding"),
    ({"data.quotechar": "\n"}, "config data.quotechar: must be '' (no quoting) or one character other than the delimiter and a line break"),
    ({"data.fields": ("(user,item)",)}, "config data.fields: ('(user,item)',): a name holds a bracket or a comma; on the "
                                        "command line quote each name, e.g. --config.data.fields=\"('user','item')\""),
    ({"data.column_names": ("label", 1)}, "config data.column_names: must be a tuple of names (non-empty strings), got ('label', 1)"),
    ({"model.students": "mlp:+2"}, "config model.students: bad count in 'mlp:+2' (use kind:count, e.g. mlp:3)"),
    ({"model.students": "mlp:1_000"}, "config model.students: bad count in 'mlp:1_000'"),
    ({"model.students": "mlp:\u0663"}, "config model.students: bad count in 'mlp:\u0663'"),  # an Arabic-Indic 3
])
def test_reviewed_values_the_run_cannot_use_name_their_key(settings, message):
    assert message in _validate_error(settings)


@pytest.mark.parametrize("coordinator", ["localhost:abc", ":", "localhost:", ":1234", "h:0", "h:65536", "h:+80", "[]:80"])
def test_a_coordinator_needs_a_host_and_a_port(coordinator):
    """localhost:abc segfaulted in jax.distributed's address lookup, ':' hung."""
    message = _validate_error({"distributed.coordinator": coordinator, "distributed.num_processes": 1,
                               "distributed.process_id": 0})
    assert message == (f"config distributed.coordinator: {coordinator!r} is not '', 'auto' or 'host:port' (a host "
                       f"name or address, and a port 1-65535)")


def test_legal_reviewed_values_pass():
    c = base_config()
    c.distributed.coordinator, c.distributed.num_processes, c.distributed.process_id = "[::1]:65535", 2, 1
    c.model.students, c.optim.eps, c.optim.min_delta = " mlp : 2 , ecn:1", 3.0e38, 1.0
    c.data.encoding, c.data.fields = "latin-1", ("user", "item")
    validate(c)
    c.distributed.coordinator = "10.0.0.1:1"
    validate(c)


@pytest.mark.parametrize("item,value", [
    ("data.column_names=(label,1,2)", ("label", "1", "2")),  # names stay names
    ("data.fields=('a', \"b\")", ("a", "b")),
    ("data.fields=()", ()),
    ("model.hidden_units=[8, 4,]", (8, 4)),
    ("model.hidden_units=(8,)", (8,)),
    ("data.split_fractions=(0.5,0.25,0.25)", (0.5, 0.25, 0.25)),
])
def test_tuple_overrides_parse_names_as_names_and_numbers_as_numbers(item, value):
    c = base_config()
    apply_overrides(c, [item])
    key = item.partition("=")[0]
    assert tuple(c[key.split(".")[0]][key.split(".")[1]]) == value


@pytest.mark.parametrize("item,message", [
    ("model.hidden_units=(400,,400)", "model.hidden_units='(400,,400)': expected a tuple without an empty element"),
    ("model.hidden_units=(400, 400", "model.hidden_units='(400, 400': expected a tuple such as (400,400)"),
    ("model.hidden_units=400", "model.hidden_units='400': expected a tuple such as (400,400)"),
])
def test_a_malformed_tuple_override_is_an_error(item, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(base_config(), [item])


def _latest():
    c = base_config()
    c.model.students = "ipnn:1,final:1,ecn:1"
    return c


@pytest.mark.parametrize("make,key,value,message", [
    (_latest, "model.dropout", 0.5, "config model.dropout=0.5 is not read: no student of 'ipnn:1,final:1,ecn:1' uses it "
                                    "(model.dropout is the mlp kind's; the others have model.<kind>.dropout)"),
    (base_config, "model.ecn.dropout", 0.5, "config model.ecn.dropout=0.5 is not read: no student of 'mlp:3' uses it"),
    (base_config, "model.cin.cin_layers", (8,), "config model.cin.cin_layers=(8,) is not read: no student of 'mlp:3'"),
    (base_config, "loss.huber_delta", 5.0, "config loss.huber_delta=5.0 is not read: loss.consistency is 'mse'"),
])
def test_an_override_no_student_reads_is_an_error(make, key, value, message):
    c, base = make(), make()
    _set(c, key, value)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        check_overrides_are_read(c, base)


@pytest.mark.parametrize("make,settings", [
    (base_config, {"model.dropout": 0.5, "model.batch_norm": False, "model.hidden_units": (8,), "model.embedding_dim": 4}),
    (_latest, {"model.batch_norm": False, "model.ecn.batch_norm": False}),  # ECN's BN: both switches; each counts
    (_latest, {"model.students": "mlp:2", "model.dropout": 0.3}),  # read by the students the override names
    (base_config, {"loss.variant": "mean", "loss.consistency": "kl"}),  # a warning of the run (sweeps set it for all variants)
    (_latest, {"model.ecn.dropout": 0.5, "model.hidden_units": (8,), "model.ipnn.dropout": 0.0, "model.dropout_rng": "jax"}),
    (base_config, {"loss.consistency": "huber", "loss.huber_delta": 5.0}),
])
def test_overrides_a_student_reads_pass(make, settings):
    c, base = make(), make()
    for key, value in settings.items():
        _set(c, key, value)
    check_overrides_are_read(c, base)


def test_a_float_key_takes_an_integer():
    c = base_config()
    c.optim.learning_rate, c.model.dropout = 1, 0
    validate(c)


def test_final_students_named_by_model_student_need_even_widths_too():
    c = base_config()
    c.model.student, c.model.num_students, c.model.hidden_units = "final", 2, (15,)
    with pytest.raises(ValueError, match="config model.hidden_units: FINAL students need even widths"):
        validate(c)


@pytest.mark.parametrize("key,value", [("optim.b1", 0.0), ("optim.b2", 0.0), ("model.embedding_init_std", 0.0),
                                       ("model.ecn.dropout", 0.0), ("data.quotechar", '"')])
def test_legal_edge_values_pass(key, value):
    """b1 = 0 (no momentum) and a zero init std are legal: [0, 1) and >= 0."""
    c = base_config()
    _set(c, key, value)
    validate(c)


# Found by fuzzing every config key (3,387 key x value tries through the command line's parser and
# validate, then 43 runs): each value passed validate and failed later, after the data was built,
# with a traceback or an error naming no key (or, for a negative layer count, trained as 0 layers).
@pytest.mark.parametrize("settings,message", [
    ({"model.embedding_init_std": math.inf}, "config model.embedding_init_std: must be a finite number >= 0, got inf"),
    ({"seed": -1}, "config seed: must be an integer in [0, 2**32), got -1"),
    ({"seed": 2**32}, "config seed: must be an integer in [0, 2**32)"),  # jax's PRNGKey(2**32) is PRNGKey(0)
    ({"data.split_seed": -1}, "config data.split_seed: must be an integer in [0, 2**32)"),
    ({"data.synthetic.seed": -1}, "config data.synthetic.seed: must be an integer in [0, 2**32)"),
    ({"model.embedding_dim": 10**20}, "config model.embedding_dim: must be in [1, 2**31)"),
    ({"train.batch_size": 10**20}, "config train.batch_size: must be in [1, 2**31)"),
    ({"train.eval_batch_size": 2**31}, "config train.eval_batch_size: must be in [0, 2**31)"),
    ({"model.num_students": 10**20}, "config model.students / num_students: need 1 to 2**31 - 1 students per group"),
    ({"model.students": "cin:1", "model.cin.cin_layers": (0,)}, "config model.cin.cin_layers: must be a non-empty tuple"),
    ({"model.students": "cin:1", "model.cin.cin_layers": ()}, "config model.cin.cin_layers: must be a non-empty tuple"),
    ({"model.students": "xdeepfm:1", "model.xdeepfm.cin_layers": (16, 0)}, "config model.xdeepfm.cin_layers:"),
    ({"model.students": "autoint:1", "model.autoint.num_heads": 0}, "config model.autoint.num_heads: must be an integer in [1, 2**31), got 0"),
    ({"model.students": "autoint:1", "model.autoint.attention_dim": 0}, "config model.autoint.attention_dim: must be an integer in [1"),
    ({"model.students": "autoint:1", "model.autoint.num_heads": 3}, "config model.autoint.num_heads: must divide attention_dim=8"),
    ({"model.students": "autoint:1", "model.autoint.attention_layers": -1}, "config model.autoint.attention_layers: must be an integer in [0"),
    ({"model.students": "afn:1", "model.afn.logarithmic_neurons": 0}, "config model.afn.logarithmic_neurons: must be an integer in [1"),
    ({"model.students": "ecn:1", "model.ecn.num_cross_layers": -1}, "config model.ecn.num_cross_layers: must be an integer in [0"),
    ({"model.student": "crossnet", "model.crossnet.num_cross_layers": -1}, "config model.crossnet.num_cross_layers:"),
    ({"data.split": "random", "data.split_fractions": (1.0, 0.0, 0.0)}, "config data.split_fractions: split='random' needs train and valid"),
    ({"data.split": "random", "data.split_fractions": (0.0, 0.5, 0.5)}, "config data.split_fractions: split='random' needs train and valid"),
])
def test_fuzzed_values_the_run_cannot_use_name_their_key(settings, message):
    assert message in _validate_error(settings)


def test_per_kind_settings_are_checked_only_for_the_kinds_in_use_and_their_edges_pass():
    c = base_config()
    c.model.cin.cin_layers, c.model.afn.logarithmic_neurons = (), 0  # no CIN or AFN student: not read
    validate(c)
    c = base_config()
    c.model.students = "ecn:1,autoint:1,cin:1"
    c.model.ecn.num_cross_layers, c.model.autoint.attention_layers, c.model.autoint.num_heads = 0, 0, 8
    c.model.cin.cin_layers, c.seed, c.data.split = (1,), 2**32 - 1, "random"
    c.data.split_fractions = (0.8, 0.2, 0.0)  # no test rows is legal
    validate(c)


def test_a_whitespace_students_spec_is_an_empty_one_everywhere():
    """validate read " " as empty (model.student x num_students) but the model read it as a spec of one
    unnamed kind: the error blamed model.student."""
    from kdef_jax.models.ensemble import groups_from_config

    c = base_config()
    c.model.students = " "
    validate(c)
    (g,) = groups_from_config(c.model)
    assert (g.kind, g.count) == ("mlp", c.model.num_students)


# --- the spec's per-dataset settings, read from the config files themselves --------------------------


def _ektf_settings(spec: str) -> tuple:
    c = load_config_file(spec)
    return (c.model.embedding_dim, tuple(c.model.hidden_units), c.model.dropout, c.model.batch_norm,
            c.optim.embedding_l2, c.train.batch_size, c.data.min_count)


def test_dataset_configs_hold_the_spec_section_5_ektf_settings():
    """spec §5 (EKTF columns) and §1.2 (min_categr_count): (dim, MLP, dropout, BN, embedding L2, batch, min count)."""
    assert _ektf_settings("configs/criteo.py") == (16, (400,) * 3, 0.1, True, 1e-5, 10_000, 10)
    assert _ektf_settings("configs/criteo_bars.py") == (16, (400,) * 3, 0.1, True, 1e-5, 10_000, 10)
    assert _ektf_settings("configs/kdd12.py") == (16, (400,) * 3, 0.0, True, 1e-5, 10_000, 10)
    assert _ektf_settings("configs/kkbox.py") == (128, (1000,) * 3, 0.1, True, 5e-4, 10_000, 10)
    assert _ektf_settings("configs/movielens.py:1m_bars") == (16, (400,) * 3, 0.1, True, 1e-2, 4096, 1)
    assert _ektf_settings("configs/ipinyou.py") == (16, (400,) * 3, 0.1, True, 1e-3, 4096, 2)


def test_dataset_configs_hold_the_spec_fields_and_ipinyou_selects_on_its_test_file():
    """spec §1.1/§1.4: Criteo I1..I13 (bucketised) then C1..C26; KDD12's Depth/Position/Impression bucketised;
    ML-1M Genres a '^' sequence of at most 5; iPinYou's validation file is test.csv (selection on the test set)."""
    criteo = load_config_file("configs/criteo.py").data
    assert criteo.fields == tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27))
    assert criteo.numeric_fields == tuple(f"I{i}" for i in range(1, 14))
    kdd = load_config_file("configs/kdd12.py").data
    assert len(kdd.fields) == 13 and set(kdd.numeric_fields) == {"Depth", "Position", "Impression"}
    ml = load_config_file("configs/movielens.py:1m_bars").data
    assert len(ml.fields) == 7 and ml.field_options.Genres.to_dict() == {"kind": "sequence", "max_len": 5, "splitter": "^"}
    ipinyou = load_config_file("configs/ipinyou.py").data
    assert len(ipinyou.fields) == 16 and ipinyou.files.valid == ipinyou.files.test == "test.csv"


def test_base_config_is_the_reference_run_setup():
    """spec §4/§5/§1.5: seed 2024, at most 100 epochs, N(0, 1e-4) embeddings, BN on, the KDEF loss with MSE
    consistency, dense Adam; FINAL 1B with its field gate (xavier/0 init), ECN with its BN."""
    c = base_config()
    assert (c.seed, c.train.num_epochs, c.model.embedding_init_std, c.model.batch_norm) == (2024, 100, 1e-4, True)
    assert (c.loss.variant, c.loss.consistency, c.optim.embedding_optimizer) == ("kdef", "mse", "dense")
    assert (c.model.final.gate_init, c.model.final.blocks, c.model.final.field_gate, c.model.ecn.batch_norm) == (
        "xavier", 1, True, True)


def test_unrun_kinds_take_the_backbone_settings_but_kdefs_shared_tower():
    """README (student zoo): the kinds the reference never ran take their own settings from its Backbone's
    constructor defaults (3 cross layers, CIN [16, 16, 16], 2 attention layers of 1 head and dim 8 with
    residual and scaling and no LayerNorm, 5 logarithmic neurons) and dropout 0.1 (the Backbone's is 0)."""
    m = base_config().model
    assert [m[k].num_cross_layers for k in ("crossnet", "dcn", "dcnv2")] == [3, 3, 3]
    assert tuple(m.cin.cin_layers) == tuple(m.xdeepfm.cin_layers) == (16, 16, 16)
    a = m.autoint
    assert (a.attention_layers, a.num_heads, a.attention_dim, a.use_residual, a.use_scale, a.layer_norm) == (
        2, 1, 8, True, True, False)
    assert m.afn.logarithmic_neurons == 5
    assert {m[k].dropout for k in ("dcnv2", "dcn", "xdeepfm", "widedeep", "deepfm", "autoint", "afn")} == {0.1}


def test_a_data_source_without_fields_is_a_config_error_before_any_data_is_read():
  """Before: the whole file was preprocessed, then a TypeError traceback from the id files."""
  c = base_config()
  c.data.format = "delimited"
  with pytest.raises(ValueError, match=r"config data\.fields: is empty: list the feature columns"):
    validate(c)
  c.data.format = "synthetic"  # generates its own fields
  validate(c)


def test_column_names_with_a_header_is_a_config_error():
  """Before: data.column_names was silently ignored when the file's header named the columns."""
  c = base_config()
  c.data.format, c.data.fields, c.data.header, c.data.column_names = "delimited", ("a",), True, ("label", "a")
  with pytest.raises(ValueError, match=r"data\.column_names: is read only without a header, and data\.header=True"):
    validate(c)
  c.data.header = False
  validate(c)


def test_a_runs_config_json_as_config_says_how_to_resume(tmp_path):
  """Before: 'config file ... not found' for a file that exists."""
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=r"is not a Python config \(configs/\*\.py, with get_config\(\)\); to "
                                              r"resume a run, give the --config and overrides that started it"):
    load_config_file(str(tmp_path / "config.json"))
  with pytest.raises(FileNotFoundError, match=r"config file '.*/nope\.py' not found"):
    load_config_file(str(tmp_path / "nope.py"))
