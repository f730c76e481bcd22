"""Raw benchmark data as stored: files over 50 KB (tables, replays, traces, cost runs' JSON and
their SQLite studies) are kept xz-compressed beside the scripts that wrote them (`xz -9e`: a third
smaller than gzip here): `NAME.xz`, and a study `NAME.db` as its SQL text, `NAME.db.sql.xz`
(what `sqlite3 NAME.db .dump` prints; two fifths smaller again than the compressed database,
whose pages and indexes compress worse than the rows they hold). Data packed before that is
`NAME.gz`, read the same way. Readers name the file as written; `locate` finds it plain or
packed, `read_json` reads any form, and `studies` gives a folder whose `tuner.db` is plain (a
temporary database rebuilt from what is stored, where it is stored packed), for
`tuner.search.studies.locate` or `tuner report --studies`.

    python benchmarks/stored.py pack FOLDER...     # raw data over 50 KB (and .gz) to .xz forms
    python benchmarks/stored.py unpack FOLDER...   # every packed file back to its plain form

A database rebuilt from its SQL holds the same schema and the same rows, value for value and
type for type (the tests check it), not the same bytes: page layout is SQLite's own. Packing
is deterministic (the xz format stores no name and no time; the SQL lists tables by name and
rows by rowid), so packing the same data again changes nothing in git.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import lzma
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

LARGE = 50_000  # bytes: raw data over this is stored compressed
RAW = (".json", ".db", ".log")  # what `pack` compresses: data, never scripts or documents
PRESET = 9 | lzma.PRESET_EXTREME  # `xz -9e`
DUMP = ".sql.xz"  # a database as its SQL text, compressed
DECOMPRESS = {".xz": lzma.decompress, ".gz": gzip.decompress}  # suffix -> reader
FORMS = (".xz", DUMP, ".gz")  # what may follow a name as written, in the order looked for


def locate(path: str | Path) -> Path:
    """`path` if it exists, else the first of `path.xz`, `path.sql.xz`, `path.gz` that does;
    FileNotFoundError naming them if none does."""
    path = Path(path)
    if path.exists() or path.suffix in DECOMPRESS:
        return path
    for form in FORMS:
        packed = path.with_name(path.name + form)
        if packed.exists():
            return packed
    raise FileNotFoundError(f"none of {path}, {', '.join(path.name + f for f in FORMS)} "
                            f"beside it")


def read_bytes(path: str | Path) -> bytes:
    """The file's content: as written, decompressed, or (a database stored as SQL) a database
    rebuilt from it."""
    found = locate(path)
    data = found.read_bytes()
    if found.name.endswith(DUMP):
        return database(lzma.decompress(data).decode())
    return DECOMPRESS[found.suffix](data) if found.suffix in DECOMPRESS else data


def read_text(path: str | Path) -> str:
    return read_bytes(path).decode()


def read_json(path: str | Path):
    return json.loads(read_bytes(path))


def dump(data: bytes) -> str:
    """A SQLite database's SQL text: its schema and every row (`.dump`). Opened from a file:
    a database in WAL mode, as the tuner's studies are, does not open in memory."""
    with tempfile.TemporaryDirectory(prefix="stored-dump-") as temp:
        path = Path(temp) / "tuner.db"
        path.write_bytes(data)
        connection = sqlite3.connect(path)
        try:
            return "\n".join(connection.iterdump()) + "\n"
        finally:
            connection.close()


def database(sql: str) -> bytes:
    """The SQLite database `sql` (from `dump`) builds."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.executescript(sql)
        return connection.serialize()
    finally:
        connection.close()


def studies(folder: str | Path) -> Path:
    """`folder`, or a temporary folder holding its `tuner.db` unpacked (SQLite cannot open it
    packed), removed when the process exits; the stored file is left as it is."""
    folder = Path(folder)
    if (folder / "tuner.db").exists() or not any(
            (folder / ("tuner.db" + form)).exists() for form in FORMS):
        return folder
    temp = Path(tempfile.mkdtemp(prefix="stored-studies-"))
    atexit.register(shutil.rmtree, temp, ignore_errors=True)
    (temp / "tuner.db").write_bytes(read_bytes(folder / "tuner.db"))
    return temp


def _files(paths: list[str]) -> Iterator[Path]:
    for path in map(Path, paths):
        yield from sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _packed(path: Path) -> tuple[Path, bytes] | None:
    """Where `path` is packed and what is written there; None where it stays as it is."""
    if path.name.endswith(DUMP) or (path.suffix == ".xz" and Path(path.stem).suffix != ".db"):
        return None  # in its present form
    if path.suffix in DECOMPRESS:  # packed before: the same data, in its present form
        plain = path.with_suffix("")
        return _packed_as(plain, DECOMPRESS[path.suffix](path.read_bytes()))
    if path.suffix in RAW and path.stat().st_size > LARGE:
        return _packed_as(path, path.read_bytes())
    return None


def _packed_as(plain: Path, data: bytes) -> tuple[Path, bytes]:
    if plain.suffix == ".db":
        sql = dump(data).encode()
        return plain.with_name(plain.name + DUMP), lzma.compress(sql, preset=PRESET)
    return plain.with_name(plain.name + ".xz"), lzma.compress(data, preset=PRESET)


def pack(paths: list[str]) -> None:
    """Raw data over `LARGE` bytes, and what an older pack left (.gz, a database's .xz), to its
    present form; written beside it first, then the source removed, so that an interrupted
    pack leaves every file whole."""
    for path in _files(paths):
        packed = _packed(path)
        if packed is None:
            continue
        target, data = packed
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
        path.unlink()
        print(f"{target}: {len(data):,} bytes", file=sys.stderr)


def unpack(paths: list[str]) -> None:
    for path in _files(paths):
        if path.name.endswith(DUMP):
            path.with_name(path.name[:-len(DUMP)]).write_bytes(read_bytes(path))
            path.unlink()
        elif path.suffix in DECOMPRESS:
            path.with_suffix("").write_bytes(DECOMPRESS[path.suffix](path.read_bytes()))
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("paths", nargs="+", help="files or folders")
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.paths)


if __name__ == "__main__":
    main()
