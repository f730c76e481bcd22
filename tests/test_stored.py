"""Raw benchmark data as stored (benchmarks/stored.py): packed to xz, a study as its SQL text,
and read back as it was: the same JSON, and a database with the same rows, value for value."""

from __future__ import annotations

import gzip
import json
import sqlite3
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import stored  # noqa: E402


def _rows(path: Path) -> dict[str, list[tuple]]:
    """Every table's rows with their rowids and each value's type, and the schema."""
    connection = sqlite3.connect(path)
    try:
        names = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {name: [tuple((type(v).__name__, v) for v in row) for row in connection.execute(
            f'SELECT rowid, * FROM "{name}" ORDER BY rowid')] for name in names}
        rows["schema"] = sorted(connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master"), key=repr)
        return rows
    finally:
        connection.close()


@pytest.fixture
def folder(tmp_path) -> Path:
    """A run's folder: a study written by optuna, a large JSON and a small one."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = tmp_path / "run"
    run.mkdir()
    study = optuna.create_study(study_name="deepcache", storage=f"sqlite:///{run / 'tuner.db'}",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(40):
        trial = study.ask()
        x = trial.suggest_float("x", 1e-9, 1.0, log=True)
        trial.set_user_attr("ratios", [x / 3, 1 / 7, 2.0 ** -40, 1e300])
        study.tell(trial, x * (1 + 1e-15) if i % 5 else None,
                   state=None if i % 5 else optuna.trial.TrialState.PRUNED)
    connection = sqlite3.connect(run / "tuner.db")
    connection.execute("PRAGMA journal_mode=WAL")  # as the tuner's own studies are
    connection.close()
    (run / "large.json").write_text(json.dumps({"rows": [i / 7 for i in range(9000)]}))
    (run / "small.json").write_text(json.dumps({"a": 1}))
    return run


def test_pack_stores_xz_and_a_study_as_sql_and_reads_them_back_as_they_were(folder, tmp_path):
    original = tmp_path / "original.db"
    original.write_bytes((folder / "tuner.db").read_bytes())
    large = json.loads((folder / "large.json").read_text())
    stored.pack([str(folder)])
    assert sorted(p.name for p in folder.iterdir()) == ["large.json.xz", "small.json",
                                                         "tuner.db.sql.xz"]
    assert stored.read_json(folder / "large.json") == large
    assert stored.read_json(folder / "small.json") == {"a": 1}
    plain = stored.studies(folder)
    assert plain != folder and _rows(plain / "tuner.db") == _rows(original)
    import optuna

    a = optuna.load_study(study_name="deepcache", storage=f"sqlite:///{original}").trials
    b = optuna.load_study(study_name="deepcache", storage=f"sqlite:///{plain / 'tuner.db'}").trials
    assert [(t.state, t.values, t.params, t.user_attrs) for t in a] == \
        [(t.state, t.values, t.params, t.user_attrs) for t in b]


def test_packing_again_or_from_gzip_gives_the_same_bytes(folder, tmp_path):
    stored.pack([str(folder)])
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    stored.pack([str(folder)])  # packed already: nothing changes
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    stored.unpack([str(folder)])
    assert sorted(p.name for p in folder.iterdir()) == ["large.json", "small.json", "tuner.db"]
    for name in ("large.json", "tuner.db"):  # as an older pack left them
        path = folder / name
        path.with_name(name + ".gz").write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        path.unlink()
    assert stored.read_json(folder / "large.json")["rows"][7] == 1.0
    stored.pack([str(folder)])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first


def test_a_missing_file_names_every_form_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"x\.json\.xz, x\.json\.sql\.xz, x\.json\.gz"):
        stored.read_json(tmp_path / "x.json")
