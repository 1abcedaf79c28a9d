"""README "A student of your own": its two files, copied from the README as they stand, train a run of
MLPs and FMs with kdef_jax.main, and export_run rebuilds that run from its config.json in a fresh process."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(rf"^```python\n(# {re.escape(name)}\n.*?)^```$", text, re.S | re.M)
    assert block, f"README: the '# {name}' example is gone"
    return block.group(1)


def _run(args, cwd, env):
    out = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def test_the_readme_student_of_your_own_trains_and_is_exported_from_its_run(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    (src / "my_students.py").write_text(_block("my_students.py"))
    (src / "my_config.py").write_text(_block("my_config.py"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "KDEF_CACHE_DIR": str(tmp_path / "cache")}
    said = _run(["-m", "kdef_jax.main", "--config", "my_config.py", "--workdir", str(tmp_path / "run"),
                 "--config.train.num_epochs=1", "--config.model.hidden_units=(16,)", "--config.model.fm.scale=0.5",
                 "--config.data.synthetic.num_train=4000", "--config.data.synthetic.num_valid=1000",
                 "--config.data.synthetic.num_test=1000", "--config.train.batch_size=500"], src, env)
    assert "[model] 6 students: mlpx4, fmx2" in said
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["model"] for r in res["rows"]] == ["ensemble", "mlp_0", "mlp_1", "mlp_2", "mlp_3", "fm_0", "fm_1"]
    model = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert model["student_modules"] == [str(src / "my_students.py")] and model["fm"] == {"scale": 0.5}
    said = _run(["-m", "kdef_jax.export_run", "--workdir", str(tmp_path / "run"), "--what", "5",
                 "--out", str(tmp_path / "fm1")], tmp_path, env)  # elsewhere: the module comes from config.json
    assert "reloaded file vs model on 256 random rows" in said
