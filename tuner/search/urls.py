"""Storage URLs as they may be shown: never with their password.

Studies on a network database are reached with a URL that may hold a password; it is masked in
every message, the report and the resume command, so that logs and shared reports do not leak
it. Better still, leave it out of the URL: libpq reads it from PGPASSWORD or ~/.pgpass.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

# scheme://user:password@rest. Like SQLAlchemy, the user ends at the first ':'; the password here
# runs to the last '@', so that an unencoded '@' in it is masked too (masking more is harmless).
_AUTHORITY = re.compile(r"^(?P<head>[^:/?#]+://[^:/]*):(?P<password>.*)@(?P<tail>[^@]*)$",
                        re.DOTALL)
_QUERY = re.compile(r"(?i)([?&]password=)([^&#]*)")


def masked(url: str) -> str:
    """`url` with its password, in the authority or as a `password=` parameter, as ***."""
    found = _AUTHORITY.match(url)
    if found and found["password"]:
        url = f"{found['head']}:{MASK}@{found['tail']}"
    return _QUERY.sub(lambda m: m[1] + (MASK if m[2] else ""), url)


def passwords(url: str) -> list[str]:
    """The password(s) `url` holds, as written and decoded."""
    found = [m["password"] for m in [_AUTHORITY.match(url)] if m and m["password"]]
    found += [m[2] for m in _QUERY.finditer(url) if m[2]]
    return [p for p in {*found, *map(unquote, found)} if p]


def scrubbed(text: str, url: str) -> str:
    """`text` (an error message, a command line) with `url`'s password masked wherever it is."""
    text = text.replace(url, masked(url))
    for password in sorted(passwords(url), key=len, reverse=True):
        text = text.replace(password, MASK)
    return text


def connectable(url: str) -> str:
    """The URL to connect with: a plain ``postgresql://`` URL uses psycopg (3), the driver of
    the ``tuner[postgres]`` extra, where it is installed (SQLAlchemy's default is psycopg2)."""
    scheme, sep, rest = url.partition("://")
    if scheme != "postgresql" or not sep:
        return url
    from importlib.util import find_spec

    return f"postgresql+psycopg://{rest}" if find_spec("psycopg") is not None else url


__all__ = ["MASK", "connectable", "masked", "passwords", "scrubbed"]
