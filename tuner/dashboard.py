"""`tuner dashboard`: optuna-dashboard on the studies and their sample-image artifacts.

Also where `tuner dashboard` and `tuner report` find the studies: ``<studies>/tuner.db`` or a
storage URL, and the artifact store beside them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .messages import described
from .search.studies import StudiesError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Studies:
    url: str  # the storage URL
    artifacts: Path | None  # the artifact store's folder, if there is one
    folder: Path | None  # the studies folder, when not given as a storage URL

    def storage(self):
        """An Optuna storage on the studies (reading an existing database; no tables made)."""
        import warnings

        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return optuna.storages.RDBStorage(self.url, skip_table_creation=True)
            except Exception as err:  # a broken file, a database server that does not answer
                raise StudiesError(f"cannot open the studies at {self.url}: "
                                   f"{described(err)}") from None

    def artifact_store(self):
        if self.artifacts is None:
            return None
        from .artifacts import open_store

        return open_store(self.artifacts, create=False)


def _sqlite_path(url: str) -> Path | None:
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
    from .artifacts import artifact_dir
    from .search.studies import DB_NAME, check_storage_url, storage_url

    if storage is not None:
        try:
            check_storage_url(storage)
        except ValueError as err:
            raise StudiesError(str(err)) from None
        path = _sqlite_path(storage)
        if path is not None and not path.is_file():
            raise StudiesError(f"no studies database at {str(path)!r} (--storage {storage})")
        url, folder = storage, None
    else:
        folder = Path(studies if studies is not None else "studies")
        db = folder / DB_NAME
        if not db.is_file():
            what = "no studies folder" if not folder.is_dir() else "no studies database"
            raise StudiesError(f"{what} at {str(db)!r}; run `tuner run --studies "
                               f"{folder}` first, or pass --studies DIR or --storage URL")
        url = storage_url(folder)
    where = artifact_dir(studies=folder, storage=storage, explicit=artifacts)
    if where is not None and not where.is_dir():
        if artifacts is not None:
            raise StudiesError(f"--artifacts {artifacts!r} is not a folder")
        where = None  # the runs stored no images (--no-artifacts)
    return Studies(url, where, folder)


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/"


def _server(host: str, port: int, app):
    """A threaded WSGI server bound to host:port (IPv4 or IPv6), quiet about each request."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError as err:
        raise StudiesError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None

    class Server(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the dashboard polls every second
            pass

    try:
        return make_server(host, port, app, server_class=Server, handler_class=Quiet)
    except OSError as err:  # the port is taken, the address is not this host's
        raise StudiesError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None


def serve(found: Studies, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Run optuna-dashboard until Ctrl-C (or SIGTERM); print its URL first.

    optuna-dashboard's app (`optuna_dashboard.wsgi`) runs on a threaded server in a background
    thread, so that Ctrl-C always reaches the waiting main thread: wsgiref's request handler
    would swallow a KeyboardInterrupt that arrives while it answers a request.
    """
    import signal
    import threading

    import optuna_dashboard

    storage = found.storage()  # fails here, before the URL is printed
    store = found.artifact_store()
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    httpd = _server(host, port, app)
    images = f"sample images from {found.artifacts}" if store else "no sample images"
    print(f"optuna-dashboard: {_url(host, port)}  ({found.url}; {images}; Ctrl-C stops it)",
          flush=True)
    thread = threading.Thread(target=httpd.serve_forever, name="optuna-dashboard", daemon=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) \
        if threading.current_thread() is threading.main_thread() else None
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print("optuna-dashboard stopped", file=sys.stderr, flush=True)
    return 0


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Studies", "StudiesError", "locate", "serve"]
