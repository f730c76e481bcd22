"""Where studies live and what they are called: one Optuna study per (setting, combo, goal).

A study's name holds every part of its identity (tuner/setting.py): a run that would measure
anything differently (other prompts, CLIP model, samples, seed, requirement, budget, GPU model)
works on another study instead of mixing its trials into this one.

Studies may live on a database server shared by several hosts (PostgreSQL): its URL's password
is never shown (urls.py), and a trial whose worker died on another host is found by heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import optuna
from optuna.storages import RDBStorage

from ..messages import described
from ..record import StudyRecord, TrialRecord, trial_records
from ..setting import Goal, Mode, Setting
from .urls import connectable, masked, scrubbed
from .workers import requeue

DB_NAME = "tuner.db"
PACKAGES = ("tuner", "torch", "diffusers", "transformers", "DeepCache", "tomesd", "tgate", "optuna")


class StudiesError(ValueError):
    """The studies cannot be found or opened; one line."""


def objectives(goal: Goal, *, full_front: bool = False) -> list[str]:
    """The study's objectives (Optuna's metric names).

    The answer is one configuration (the fastest feasible one, or the feasible one that meets
    the requirement), so the sampler aims at speed, with the loss budget as a constraint
    (Optuna's constrained TPE). Two objectives, speed and loss, would spread the search along
    the whole Pareto front: on the sampler benchmark at a 5 % budget, multi-objective TPE left
    the optimum unfound after 40 stale evaluations in 6 of 20 replays, one objective in 2
    (BENCHMARKS.md, section 4). `--full-front` asks for the front: two objectives.
    """
    if full_front and goal.mode == Mode.MAX_SPEEDUP:
        return ["speedup", goal.loss_name]
    return ["speedup"]


def study_name(setting: Setting, combo: str, goal: Goal, *, full_front: bool = False) -> str:
    """Readable in optuna-dashboard; every part that changes the measurements, or what the
    sampler aims at, is in it."""
    from ..accelerators import space_label

    objective = "speedup x loss" if len(objectives(goal, full_front=full_front)) == 2 \
        else "speedup"
    label = space_label(combo)  # a searched scheduler and step count: their values
    return " | ".join([*setting.parts, goal.key, combo, *([label] if label else []), objective])


def check_storage_url(url: str) -> None:
    """Raise ValueError (one line) unless `url` is a database URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise ValueError(f"--storage {masked(url)!r} is not a database URL "
                         f"(e.g. postgresql://user@host/db or sqlite:///path.db)") from None


def storage_url(studies) -> str:
    return f"sqlite:///{Path(studies).resolve() / DB_NAME}"


def _requeue_stale(study: optuna.Study, trial) -> None:
    """A trial silent for three beats (its worker was killed, or its host went away) runs again
    with the same parameters, as a dead worker's trial on this host does (workers.py): the
    retry carries none of the dead trial's claim, so no process takes it for a running one."""
    requeue(study, trial)


def _cannot_open(url: str, err: Exception) -> StudiesError:
    """One line that names the studies without the password, nor lets the driver's message
    show it."""
    reason = scrubbed(described(err), url)
    if isinstance(err, ImportError) and url.split("://")[0] in ("postgresql",
                                                                 "postgresql+psycopg"):
        reason += "; pip install 'tuner[postgres]'"
    return StudiesError(f"cannot open the studies at {masked(url)}: {reason}")


def open_storage(url: str, *, heartbeat: int = 10) -> RDBStorage:
    """An RDB storage whose running trials beat every `heartbeat` seconds; a trial silent for
    three beats (its worker was killed, here or on another host) is failed and re-queued with
    the same parameters."""
    import time
    import warnings

    sqlite = url.startswith("sqlite")
    # A server's connections can be dropped while a trial runs (idle timeouts, a restart).
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(
                    connectable(url), engine_kwargs=engine,
                    heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=_requeue_stale)
            if sqlite:  # readers (the dashboard, other workers) no longer block the writer
                with storage.engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                _begin_immediately(storage.engine)
            return storage
        except Exception as err:  # no driver, a server that does not answer, a broken file
            # Processes started together on a new database race to create its tables
            # (PostgreSQL says so as a duplicate key of its catalogue, SQLite sometimes as a
            # duplicate schema version).
            racing = ("already exists", "duplicate key", "UNIQUE constraint failed")
            if any(s in str(err) for s in racing) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise _cannot_open(url, err) from None
    raise AssertionError("unreachable")


def _begin_immediately(engine) -> None:
    """Every transaction on this SQLite engine takes the database's write lock when it begins.

    Optuna claims a queued trial by reading it WAITING and writing it RUNNING in one
    transaction, with SELECT ... FOR UPDATE, which SQLite ignores; and Python's sqlite3 begins
    a transaction only at its first write, so the read runs outside it. Two processes then both
    read WAITING and both write RUNNING: one trial runs twice, and the second to finish fails
    with "Cannot tell a COMPLETE trial" (optuna/optuna#4002, #4621). BEGIN IMMEDIATE makes the
    read and the write one step. This is SQLAlchemy's recipe for pysqlite's transactions
    ("Serializable isolation / Savepoints / Transactional DDL", the pysqlite dialect's docs)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # sqlite3's own late BEGIN off

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners are not reused


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def open_study(storage, setting: Setting, combo: str, goal: Goal, prompts: list[str],
               sampler=None, *, full_front: bool = False) -> optuna.Study:
    name = study_name(setting, combo, goal, full_front=full_front)
    metrics = objectives(goal, full_front=full_front)
    directions = ["maximize", "minimize"][:len(metrics)]
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                directions=directions, load_if_exists=True)
    if not StudyRecord.has_identity(study):
        study.set_metric_names(metrics)
        StudyRecord.write_identity(study, setting=setting, goal=goal, combo=combo,
                                   prompts=prompts)
    return study


def load_group(storage, setting: Setting, goal: Goal, combos, *, full_front: bool = False
               ) -> list[tuple[optuna.Study, StudyRecord, list[TrialRecord]]]:
    """The existing studies of `combos` for this setting and goal, in the order given."""
    names = set(optuna.get_all_study_names(storage))
    found = []
    for combo in combos:
        name = study_name(setting, combo, goal, full_front=full_front)
        if name in names:
            study = optuna.load_study(study_name=name, storage=storage)
            found.append((study, StudyRecord.of(study), trial_records(study)))
    return found


def check_database(path: Path, *, flag: str = "--studies") -> None:
    """An existing SQLite file must be an Optuna study database (or empty), checked read-only:
    a foreign file is refused in one line before Optuna, which writes its version table into
    any database it opens, touches it."""
    import contextlib
    import sqlite3

    if not path.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{readable(path)}?mode=ro",
                                                uri=True)) as connection:
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as err:
        raise StudiesError(f"studies database {str(path)!r} is unreadable or corrupt "
                           f"({err}); move it away or pass another {flag}") from None
    if tables and "studies" not in tables:
        raise StudiesError(f"{str(path)!r} is an SQLite database but not an Optuna study "
                           f"database; move it away or pass another {flag}")


def read_only(path: Path) -> bool:
    """Whether SQLite could not write beside `path` (a read-only mount, an archived copy):
    reading a database also writes (its journal, Optuna's version row)."""
    import os

    return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


_COPIES: dict[Path, Path] = {}


def readable(path: Path) -> Path:
    """Where to read the SQLite database `path`: itself, or, when it is read-only, a private
    copy of it with its write-ahead log (made once per process, removed when it ends). Read
    there, the original is never written."""
    if not read_only(path):
        return path
    if path not in _COPIES:
        _COPIES[path] = _copy_aside(path)
    return _COPIES[path]


def _copy_aside(path: Path) -> Path:
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tuner-studies-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for suffix in ("", "-wal"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            shutil.copyfile(source, folder / source.name)
    return folder / path.name


@dataclass(frozen=True)
class Studies:
    url: str  # the storage URL as shown (report, dashboard): its password masked
    artifacts: Path | None  # the artifact store's folder, if there is one
    folder: Path | None  # the studies folder, when not given as a storage URL
    secret_url: str | None = field(default=None, repr=False, compare=False)  # to connect

    @property
    def read_only(self) -> bool:
        """A SQLite database that cannot be written where it is: read from a copy."""
        path = sqlite_path(self.secret_url or self.url)
        return path is not None and read_only(path)

    def storage(self):
        """An Optuna storage on the studies (reading an existing database; no tables made).
        A read-only SQLite database is read from a private copy (`read_only`)."""
        import warnings

        import optuna

        url = self.secret_url or self.url
        if self.read_only:
            url = f"sqlite:///{readable(sqlite_path(url))}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return optuna.storages.RDBStorage(connectable(url), skip_table_creation=True)
            except Exception as err:  # a broken file, a database server that does not answer
                raise _cannot_open(url, err) from None

    def artifact_store(self):
        if self.artifacts is None:
            return None
        from ..artifacts import open_store

        return open_store(self.artifacts, create=False)


def sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite storage URL (None for other databases, or in memory)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def locate(studies: str | None = None, storage: str | None = None,
           artifacts: str | None = None) -> Studies:
    """The studies of a folder (``<studies>/tuner.db``) or a storage URL, and their artifacts.

    Raises `StudiesError` when there is no database to read: reading never creates one.
    """
    from ..artifacts import artifact_dir
    if storage is not None:
        try:
            check_storage_url(storage)
        except ValueError as err:
            raise StudiesError(str(err)) from None
        path = sqlite_path(storage)
        if path is not None and not path.is_file():
            raise StudiesError(f"no studies database at {str(path)!r} "
                               f"(--storage {masked(storage)})")
        if path is not None:
            check_database(path, flag="--storage")
        url, folder = storage, None
    else:
        folder = Path(studies if studies is not None else "studies")
        db = folder / DB_NAME
        if not db.is_file():
            what = (f"no studies folder {str(folder)!r}" if not folder.is_dir()
                    else f"no studies database {str(db)!r}")
            raise StudiesError(f"{what}; run `tuner run --studies {folder}` first, or pass "
                               f"--studies DIR or --storage URL")
        check_database(db)
        url = storage_url(folder)
    where = artifact_dir(studies=folder, storage=storage, explicit=artifacts)
    if where is not None and not where.is_dir():
        if artifacts is not None:
            raise StudiesError(f"--artifacts {artifacts!r} is not a folder")
        where = None  # the runs stored no images (--no-artifacts)
    return Studies(masked(url), where, folder, url)


__all__ = ["DB_NAME", "Studies", "StudiesError", "check_database", "check_storage_url",
           "load_group", "locate", "objectives", "open_storage", "open_study", "read_only",
           "readable", "sqlite_path", "storage_url", "study_name", "versions"]
