"""README "Your own data": its example config file, copied from the README as it stands, trains on a CSV of
that shape (quoted values, a YYMMDDHH hour turned into fields, a | sequence, an id column left out)."""

import csv
import json
import random
import re
from pathlib import Path

from kdef_jax.config import load_config_file, validate
from kdef_jax.train import train_and_evaluate

README = Path(__file__).resolve().parents[1] / "README.md"


def _example_config() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"^# my_data\.py.*?^    return c$", text, re.S | re.M)
    assert block, "README: the '# my_data.py' example is gone"
    return block.group(0)


def _write_csv(path: Path, rows: int, rng: random.Random) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "click", "hour", "site", "device", "tags"])
        for i in range(rows):
            site = rng.choice(["s1", "s2", "s,3"])  # written quoted
            tags = "|".join(rng.sample("abcdefg", rng.randint(0, 6)))
            w.writerow([i, int(rng.random() < 0.2 + 0.6 * (site == "s1")), f"1410{rng.randint(21, 30):02d}{rng.randint(0, 23):02d}",
                        site, rng.choice(["d1", "d2"]), tags])


def test_the_readme_example_config_trains_on_data_of_its_shape(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(0)
    for name, rows in (("train.csv", 1200), ("valid.csv", 300), ("test.csv", 300)):
        _write_csv(data / name, rows, rng)
    source = _example_config()
    assert 'd.data_dir = "/data/mine"' in source
    (tmp_path / "my_data.py").write_text(source.replace("/data/mine", str(data)))
    c = load_config_file(str(tmp_path / "my_data.py"))
    validate(c)
    c.data.cache_dir = str(tmp_path / "cache")
    c.model.hidden_units, c.train.num_epochs, c.train.batch_size = (8,), 1, 256
    c.train.progress, c.train.plot = False, False
    res = train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert res["epochs_run"] == 1 and 0.5 < res["rows"][0]["test_auc"] <= 1.0
    vocab = json.loads((tmp_path / "run" / "vocab.json").read_text())
    assert list(vocab) == ["site", "device", "hour_of_day", "weekday", "tags"]  # no id, no label
    assert vocab["site"] == ["s,3", "s1", "s2"] and vocab["tags"] == list("abcdefg")
    assert vocab["weekday"] == [str(i) for i in range(7)] and len(vocab["hour_of_day"]) == 24
    fields = json.loads((tmp_path / "run" / "feature_map.json").read_text())["fields"]
    assert [f["max_len"] for f in fields] == [1, 1, 1, 1, 5]

