"""`tuner dashboard`: optuna-dashboard on the studies and their sample-image artifacts.

optuna-dashboard has no authentication, and its UI can create and delete studies: it is served
on the loopback interface only, unless the user asks for more (`--allow-remote`).
"""

from __future__ import annotations

import sys

from .search.studies import Studies, StudiesError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) reaches this machine's loopback interface only."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError:  # unknown: not shown to be safe
        return False
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def remote_warning(host: str, port: int) -> str:
    return (f"tuner: warning: optuna-dashboard has no authentication: anyone who can reach "
            f"{host} port {port} can read, create and delete these studies")


def remote_refusal(host: str) -> str:
    return (f"--host {host} is not a loopback address, and optuna-dashboard has no "
            f"authentication (anyone reaching it can delete studies): pass --allow-remote to "
            f"serve it anyway, or reach it through an SSH tunnel (ssh -L)")


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
    if found.read_only:
        images += "; the database is read-only: served from a copy, changes are not kept"
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


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "is_loopback", "remote_refusal", "remote_warning",
           "serve"]
