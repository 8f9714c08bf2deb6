"""A Starlette app served by uvicorn on a thread of the loop's process (the web page, Label Studio's endpoints)."""

from __future__ import annotations

import socket
import threading
from typing import Any

from alab.errors import AlabError

STARTUP_SECONDS = 10.0


def serve(app: Any, host: str, port: int, what: str) -> tuple[Any, threading.Thread, str]:
    """(server, its thread, http://host:port) of `app` bound to host:port (0: any free port); AlabError if it cannot."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise AlabError(f"cannot serve {what} on {host}:{port}: {err.strerror}") from None
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"alab-{what}", daemon=True)
    thread.start()
    waited = threading.Event()
    for _ in range(int(STARTUP_SECONDS / 0.05)):
        if server.started or not thread.is_alive():
            break
        waited.wait(0.05)
    if not server.started:
        raise AlabError(f"the server of {what} did not start")
    return server, thread, f"http://{f'[{host}]' if ':' in host else host}:{bound}"
