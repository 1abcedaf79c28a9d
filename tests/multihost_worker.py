"""One process of a multi-process CPU run for tests/test_multihost.py (not collected by pytest).

    python tests/multihost_worker.py --workdir W --cache C --devices 2 --coordinator localhost:PORT \
        --num-processes 2 --process-id 0 [--resume] [--epochs N]

Trains ``configs/default.py:tiny`` on a (data = all devices) mesh with ``--devices`` CPU devices in
this process; without ``--coordinator`` it is the one-process run the multi-process one must match.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--coordinator", default="")
    p.add_argument("--num-processes", type=int, default=0)
    p.add_argument("--process-id", type=int, default=-1)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--embedding", default="replicated", help="config mesh.embedding")
    p.add_argument("--fail-data-on-process-0", action="store_true", help="process 0's dataset load raises")
    p.add_argument("--test-rows", type=int, default=0, help="data.synthetic.num_test of this process (0: the config's)")
    p.add_argument("--fail-batch-on-process", type=int, default=None,
                   help="this process's third training batch raises (a failure in the middle of an epoch)")
    a = p.parse_args()
    # a hung run (tests/test_multihost.py sends SIGUSR1 at its timeout) prints where every thread waits
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    import jax

    jax.config.update("jax_num_cpu_devices", a.devices)
    from kdef_jax.config import load_config_file
    from kdef_jax.train import train_and_evaluate

    c = load_config_file(str(ROOT / "configs" / "default.py") + ":tiny")
    c.data.cache_dir = a.cache
    c.data.synthetic.num_train = 3000  # 6 batches of 512, the last one padded (440 real rows)
    c.model.num_students = 2
    c.data.synthetic.num_test = a.test_rows or c.data.synthetic.num_test
    c.train.num_epochs = a.epochs
    c.train.plot = False
    c.train.log_every = 1  # float(loss) each step: a read of a replicated global scalar
    c.resume = a.resume
    c.mesh.embedding = a.embedding
    c.distributed.coordinator = a.coordinator
    c.distributed.num_processes = a.num_processes
    c.distributed.process_id = a.process_id
    if a.fail_data_on_process_0 and a.process_id == 0:
        import kdef_jax.train

        def broken(*args, **kw):
            raise FileNotFoundError("worker: no data on process 0")

        kdef_jax.train.load_dataset = broken
    if a.fail_batch_on_process is not None and a.fail_batch_on_process == a.process_id:
        import kdef_jax.train

        real = kdef_jax.train.iterate_batches

        def failing(*args, **kw):
            for i, batch in enumerate(real(*args, **kw)):
                if i == 2 and kw.get("order") is not None:  # a training epoch's third batch
                    raise OSError("worker: the third batch could not be read")
                yield batch

        kdef_jax.train.iterate_batches = failing
    try:
        results = train_and_evaluate(c, a.workdir, log=lambda *m: print(*m, flush=True))
    except Exception as e:  # as kdef_jax.main does: print, then no shutdown barrier in a multi-process run
        import traceback

        from kdef_jax import distributed

        traceback.print_exc()
        distributed.stop_if_multi_process(e, 1)
        raise
    print("RESULT " + json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                                  "test_auc": [r["test_auc"] for r in results["rows"]],
                                  "epochs_run": results["epochs_run"]}), flush=True)


if __name__ == "__main__":
    main()
