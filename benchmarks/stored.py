"""Raw benchmark data as stored: files over 50 KB (tables, replays, traces, cost runs' JSON and
their SQLite studies) are kept gzip-compressed beside the scripts that wrote them, `NAME.gz`,
which makes benchmarks/ an eighth of its raw weight. Readers name the file as written;
`locate` finds it plain or compressed, `read_json` reads either, and `studies` gives a folder
whose `tuner.db` is plain (a decompressed temporary copy where it is stored compressed), for
`tuner.search.studies.locate` or `tuner report --studies`.

    python benchmarks/stored.py pack FOLDER...     # compress the raw data over 50 KB in place
    python benchmarks/stored.py unpack FOLDER...   # decompress every .gz in place (for tools)

Packing is deterministic (`gzip -n`: no name, no time in the header), so packing the same data
again changes nothing in git.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

LARGE = 50_000  # bytes: raw data over this is stored compressed
RAW = (".json", ".db", ".log")  # what `pack` compresses: data, never scripts or documents


def locate(path: str | Path) -> Path:
    """`path` if it exists, else `path.gz`; FileNotFoundError naming both if neither does."""
    path = Path(path)
    if path.exists() or path.suffix == ".gz":
        return path
    packed = path.with_name(path.name + ".gz")
    if packed.exists():
        return packed
    raise FileNotFoundError(f"neither {path} nor {packed.name} beside it")


def read_bytes(path: str | Path) -> bytes:
    found = locate(path)
    data = found.read_bytes()
    return gzip.decompress(data) if found.suffix == ".gz" else data


def read_text(path: str | Path) -> str:
    return read_bytes(path).decode()


def read_json(path: str | Path):
    return json.loads(read_bytes(path))


def studies(folder: str | Path) -> Path:
    """`folder`, or a temporary folder holding its `tuner.db` decompressed (SQLite cannot open
    it compressed), removed when the process exits; the stored file is left as it is."""
    folder = Path(folder)
    if (folder / "tuner.db").exists() or not (folder / "tuner.db.gz").exists():
        return folder
    temp = Path(tempfile.mkdtemp(prefix="stored-studies-"))
    atexit.register(shutil.rmtree, temp, ignore_errors=True)
    (temp / "tuner.db").write_bytes(read_bytes(folder / "tuner.db"))
    return temp


def _files(paths: list[str]) -> Iterator[Path]:
    for path in map(Path, paths):
        yield from sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def pack(paths: list[str]) -> None:
    for path in _files(paths):
        if path.suffix in RAW and path.stat().st_size > LARGE:
            packed = path.with_name(path.name + ".gz")
            with path.open("rb") as source, packed.open("wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as target:
                shutil.copyfileobj(source, target)
            path.unlink()
            print(f"{packed}: {packed.stat().st_size:,} bytes", file=sys.stderr)


def unpack(paths: list[str]) -> None:
    for path in _files(paths):
        if path.suffix == ".gz":
            path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("paths", nargs="+", help="files or folders")
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.paths)


if __name__ == "__main__":
    main()
