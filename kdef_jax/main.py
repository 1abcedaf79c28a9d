"""Train a KDEF ensemble of CTR students (or resume one) and evaluate it: checkpoints, metrics.jsonl,
results.json and curves.png go to --workdir.

    python -m kdef_jax.main --config configs/frappe.py --workdir runs/frappe

Any config value can be overridden: ``--config.model.num_students=6 --config.loss.variant=kd_only``.
A ``:tiny`` suffix on the config path selects its smoke-test variant (``configs/frappe.py:tiny``).
Every key, its default and meaning: ``kdef_jax/config.py`` (``base_config``); a config file for your own
data files: README, "Your own data". Resume: the same command with ``--config.resume=True``.
"""

from __future__ import annotations

import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from kdef_jax import distributed, interrupts
from kdef_jax.config import (check_overrides_are_read, config_value, load_config_file, resolve_student_modules,
                             set_config_value, unknown_key)
from kdef_jax.report import tolerant_stdio
from kdef_jax.run_files import error_text, exit_interrupted

_ARGV: list = []  # the command line the config flag reads its overrides from: set by run() (flag files expanded)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).", lock_config=True,
                                          sys_argv=_ARGV)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])
_LATER: list = []  # (key, value) overrides of kinds of your own, applied after absl's (split_config_overrides)


def _usage_error(message: str):
    print(f"kdef_jax: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    if len(argv) > 1:
        _usage_error(f"unexpected arguments: {argv[1:]} (every setting is a --flag or --config.key=value)")
    if not _WORKDIR.value.strip():  # an unset shell variable: the run would write into the current folder
        _usage_error("--workdir is empty; give the run's folder")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    from kdef_jax.train import REPORTED_ERRORS, train_and_evaluate

    with interrupts.remembered():  # a Ctrl-C swallowed by a gc callback is raised again at the next step
        try:
            config = _CONFIG.value
            resolve_student_modules(config)  # a --config.model.student_modules path: absolute in config.json
            for key, value in _LATER:  # of the sections those modules brought
                set_config_value(config, key, value)
            base = load_config_file(config_flags.get_config_filename(flags.FLAGS["config"]))
            base.model.student_modules = config.model.student_modules  # the same sections, at their defaults
            resolve_student_modules(base)
            check_overrides_are_read(config, base)
            train_and_evaluate(config, _WORKDIR.value)
        except REPORTED_ERRORS as e:  # without a deep traceback; a full disk also says what to do
            again = "run the same command again (with --config.resume=True where a checkpoint was saved)"
            print("\n" + error_text("kdef_jax", e, again), file=sys.stderr)
            distributed.stop_if_multi_process(e, 2)
            sys.exit(2)
        except KeyboardInterrupt:
            exit_interrupted(f"\nkdef_jax: interrupted; the epochs checkpointed so far are kept: continue with the same "
                             f"command and --config.resume=True (--workdir {_WORKDIR.value})")
        except Exception as e:  # a multi-process run must not reach the shutdown barrier (see stop_if_multi_process)
            if not distributed.multi_process():
                raise
            traceback.print_exc()
            distributed.stop_if_multi_process(e, 1)


def check_config_overrides(argv: list) -> str | None:
    """Error message for a config file that does not load, the first ``--config.a.b=v`` whose key the
    config does not have, a value that does not parse or a ``model.student_modules`` module that does not
    import (see :func:`split_config_overrides`), else None (absl would report these as a traceback)."""
    return split_config_overrides(argv)[2]


def split_config_overrides(argv: list) -> tuple[list, list, str | None]:
    """(``argv`` for absl, ``(key, value)`` overrides for after it, error message or None). An override of a
    section that ``--config.model.student_modules`` brings (``--config.model.<kind>.*`` for a kind of your
    own) is taken out of ``argv``: absl applies overrides to the config file's keys, which lack that section,
    so :func:`main` applies it once the modules are imported, as absl parses it against those sections.
    Others stay for absl, which applies them. ``argv``: flag files expanded, without the program name."""
    end = argv.index("--") if "--" in argv else len(argv)  # absl: what follows "--" is positional
    if argv[end + 1:]:
        return list(argv), [], f"unexpected arguments after '--': {argv[end + 1:]} (every setting is a --flag or --config.key=value)"
    # absl's spellings: --config / -config, --config.k=v / --config.k v, and --noconfig.k for a boolean k
    names = [a.lstrip("-") if a.startswith("-") and i < end else None for i, a in enumerate(argv)]
    negated = [bool(n and n.startswith("noconfig.")) for n in names]
    names = [n[2:] if neg else n for n, neg in zip(names, negated)]
    spec = next((n.split("=", 1)[1] for n in names if n and n.startswith("config=")), None)
    if spec is None and "config" in names[:end - 1]:
        spec = argv[names.index("config") + 1]
    overrides = [(i, n[len("config."):].split("=", 1)[0]) for i, n in enumerate(names) if n and n.startswith("config.")]
    if spec is None:
        return list(argv), [], None
    try:
        config = load_config_file(spec)
    except Exception as e:  # noqa: BLE001 - report the config file's own error plainly
        return list(argv), [], f"cannot load config {spec!r}: {type(e).__name__}: {e}"

    def span(i: int, flag: bool) -> list:  # argv indices of the flag at i: "k=v", a boolean "k", or "k v"
        return [i] if "=" in names[i] or negated[i] or flag or i + 1 >= end else [i, i + 1]

    unknown = [(i, key) for i, key in overrides if unknown_key(config, key)]
    modules = [i for i, key in overrides if key == "model.student_modules"]
    if unknown and modules:  # the sections of the kinds those modules register, the modules as absl reads them
        config_at = next(i for i, n in enumerate(names) if n and (n == "config" or n.startswith("config=")))
        config = _parsed(lambda fv, argv: config_flags.DEFINE_config_file(
            "config", None, "", flag_values=fv, lock_config=False, sys_argv=argv),
            [argv[j] for i in (config_at, *modules) for j in span(i, False)])
        if isinstance(config, str):
            return list(argv), [], config
    taken = []
    for i, key in unknown:
        problem = unknown_key(config, key)
        if problem:
            return list(argv), [], problem
        taken += span(i, isinstance(config_value(config, key), bool))
    if not taken:
        return list(argv), [], None
    parsed = _parsed(lambda fv, argv: config_flags.DEFINE_config_dict(
        "config", config, flag_values=fv, lock_config=False, sys_argv=argv), [argv[j] for j in sorted(taken)])
    if isinstance(parsed, str):
        return list(argv), [], parsed
    later = [(key, config_value(parsed, key)) for key in dict.fromkeys(key for _, key in unknown)]
    return [a for i, a in enumerate(argv) if i not in taken], later, None


def _parsed(define, args: list):
    """The config of a config flag defined by ``define(flag_values, argv)`` on a fresh set of flags, after
    absl parsed ``args``; or the error message (a flag that does not parse, a module that does not import)."""
    fv, argv = flags.FlagValues(), ["kdef_jax", *args]
    define(fv, argv)
    try:
        fv(argv)
        config = fv.config
        resolve_student_modules(config)
    except (flags.Error, ValueError) as e:
        return str(e)
    return config


_HELP_FLAGS = {"help", "?", "helpshort", "helpfull", "helpxml"}  # absl's


def parse_flags(argv: list) -> list:
    """absl's flag parsing, but a bad flag (a typed override that does not parse, a missing
    required flag) is a usage error: one line on stderr and exit status 2, like unknown keys; and
    asking for help (absl prints it, then exits with status 1) exits with status 0."""
    argv = [argv[0], *("--help" if a == "-h" else a for a in argv[1:])]  # absl knows --help and -?, not -h
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _usage_error(str(e))
    except SystemExit as e:
        if e.code == 1 and any(a.startswith("-") and a.lstrip("-").split("=")[0] in _HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise


def run():
    tolerant_stdio()
    try:
        argv = flags.FLAGS.read_flags_from_files(sys.argv[1:])  # --flagfile=F: its flags, as absl reads them
    except flags.Error as e:
        _usage_error(str(e))
    argv, later, problem = split_config_overrides(argv)
    if problem:
        _usage_error(problem)
    _LATER[:] = later
    sys.argv[1:] = _ARGV[:] = argv
    _ARGV.insert(0, sys.argv[0])
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
