"""Raw benchmark data as stored: files over 50 KB (tables, replays, traces, cost runs' JSON and
their SQLite studies) are kept xz-compressed beside the scripts that wrote them, `NAME.xz`
(`xz -9e`: a third smaller than gzip on these studies and replays; data packed before that is
`NAME.gz`, read the same way). Readers name the file as written; `locate` finds it plain or
compressed, `read_json` reads any form, and `studies` gives a folder whose `tuner.db` is plain
(a decompressed temporary copy where it is stored compressed), for
`tuner.search.studies.locate` or `tuner report --studies`.

    python benchmarks/stored.py pack FOLDER...     # compress raw data over 50 KB (and .gz) to .xz
    python benchmarks/stored.py unpack FOLDER...   # decompress every .xz and .gz in place

Packing is deterministic (the xz format stores no name and no time), so packing the same data
again changes nothing in git.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import lzma
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

LARGE = 50_000  # bytes: raw data over this is stored compressed
RAW = (".json", ".db", ".log")  # what `pack` compresses: data, never scripts or documents
PACKED = ".xz"
PRESET = 9 | lzma.PRESET_EXTREME  # `xz -9e`
DECOMPRESS = {".xz": lzma.decompress, ".gz": gzip.decompress}  # suffix -> reader, preferred first


def locate(path: str | Path) -> Path:
    """`path` if it exists, else `path.xz` or `path.gz`; FileNotFoundError naming them if none
    does."""
    path = Path(path)
    if path.exists() or path.suffix in DECOMPRESS:
        return path
    for suffix in DECOMPRESS:
        packed = path.with_name(path.name + suffix)
        if packed.exists():
            return packed
    raise FileNotFoundError(f"none of {path}, {' or '.join(path.name + s for s in DECOMPRESS)} "
                            f"beside it")


def read_bytes(path: str | Path) -> bytes:
    found = locate(path)
    data = found.read_bytes()
    return DECOMPRESS[found.suffix](data) if found.suffix in DECOMPRESS else data


def read_text(path: str | Path) -> str:
    return read_bytes(path).decode()


def read_json(path: str | Path):
    return json.loads(read_bytes(path))


def studies(folder: str | Path) -> Path:
    """`folder`, or a temporary folder holding its `tuner.db` decompressed (SQLite cannot open
    it compressed), removed when the process exits; the stored file is left as it is."""
    folder = Path(folder)
    if (folder / "tuner.db").exists() or not any(
            (folder / ("tuner.db" + suffix)).exists() for suffix in DECOMPRESS):
        return folder
    temp = Path(tempfile.mkdtemp(prefix="stored-studies-"))
    atexit.register(shutil.rmtree, temp, ignore_errors=True)
    (temp / "tuner.db").write_bytes(read_bytes(folder / "tuner.db"))
    return temp


def _files(paths: list[str]) -> Iterator[Path]:
    for path in map(Path, paths):
        yield from sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def pack(paths: list[str]) -> None:
    """Raw data over `LARGE` bytes, and anything stored as .gz, becomes `NAME.xz`; written
    beside it first, then the source is removed, so an interrupted pack leaves the data whole."""
    for path in _files(paths):
        if path.suffix == ".gz":
            data, packed = gzip.decompress(path.read_bytes()), path.with_suffix(PACKED)
        elif path.suffix in RAW and path.stat().st_size > LARGE:
            data, packed = path.read_bytes(), path.with_name(path.name + PACKED)
        else:
            continue
        partial = packed.with_name(packed.name + ".partial")
        partial.write_bytes(lzma.compress(data, preset=PRESET))
        partial.replace(packed)
        path.unlink()
        print(f"{packed}: {packed.stat().st_size:,} bytes", file=sys.stderr)


def unpack(paths: list[str]) -> None:
    for path in _files(paths):
        if path.suffix in DECOMPRESS:
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
