"""Shared test helper: a quiet HTTP server on 127.0.0.1 in a daemon thread, for the download tests (no network)."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that logs nothing; a test's subclass writes ``do_GET``."""

    def log_message(self, *args):
        pass


@contextmanager
def serving(handler: type[QuietHandler]):
    """``http://127.0.0.1:PORT`` (a free port) while ``handler`` answers there; shut down and joined on the way out."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
