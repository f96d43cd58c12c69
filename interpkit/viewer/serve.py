"""Serving a viewer folder on localhost with Python's own HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
from pathlib import Path

from ..errors import InputError


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per image request would drown the terminal

    def send_head(self):
        try:
            return super().send_head()
        except ValueError:  # a NUL byte in the path (%00), which no file name holds: the server printed a traceback
            self.send_error(http.HTTPStatus.BAD_REQUEST, "the path holds a character no file name can")
            return None


def check_port(port: int) -> int:
    """A TCP port number (0: any free port)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"port must be an int from 0 to 65535, not {port!r}")
    return port


def viewer_server(folder: str | Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``folder`` (a written viewer) on 127.0.0.1:``port`` (0: any free port),
    bound but not yet serving."""
    if not isinstance(folder, (str, os.PathLike)):
        raise InputError(f"folder is the viewer's path, not {type(folder).__name__}")
    root = Path(folder)
    if not (root / "index.html").is_file() or not (root / "data" / "site.js").is_file():
        raise InputError(f"{root} holds no viewer; write one with `interpkit view STORE --out {root}` first")
    check_port(port)
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Quiet, directory=str(root)))
    except OSError as error:
        raise InputError(f"cannot serve on port {port}: {error.strerror or error}; choose another with --port") from None


def serve(folder: str | Path, port: int = 8000) -> None:
    """Serve ``folder`` at http://127.0.0.1:PORT/ until interrupted."""
    with viewer_server(folder, port) as server:
        print(f"serving {folder} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
