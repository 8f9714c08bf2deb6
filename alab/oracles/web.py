"""The web labeler: a local labeling page (Starlette under uvicorn), for a person in a browser.

`alab run --oracle web` serves the page on 127.0.0.1 (an `[oracle]` table may set host, port and
open_browser) and prints its address with a random access token; a request without that token is
refused (403). The page shows each queried item (an image, or a table of features), the model's top
classes and the acquisition score, one button per class with keyboard shortcuts, "none of these"
(an item from outside the classes; key `-`), skip and undo, and the round's progress; an item whose
epistemic uncertainty is above the bar (`alab.tasks.OUTSIDE_QUANTILE`) is marked as possibly outside
the classes; it polls `/api/state`, so the next batch appears by itself after retraining.

A label's POST is answered only after the loop has journaled it (the oracle's `acknowledge`): what
the page shows as saved is in labels.csv, whatever happens to the process next.
"""

from __future__ import annotations

import asyncio
import queue
import secrets
import threading
import webbrowser
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from typing import Any

from alab.config import from_mapping
from alab.errors import AlabError
from alab.oracles.base import NONE_OF_THESE, UNDO, Label, OracleContext, Query, register_oracle
from alab.oracles.render import display_image, feature_rows, png_bytes, top_classes
from alab.oracles.serving import serve


@dataclass(frozen=True)
class WebOptions:
    """The `[oracle]` table of `--oracle web`."""

    host: str = "127.0.0.1"  # another address exposes the page (and its token) to that network
    port: int = 0  # 0: any free port
    open_browser: bool = False  # open the page in the default browser

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise AlabError(f"oracle.port must be in 0..65535, got {self.port}")


class Refused(Exception):
    """A request the page may not make now: HTTP `status` with a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class WebOracle:
    """The labeling state the page sees, shared between the server's thread and the loop's."""

    def __init__(self, context: OracleContext) -> None:
        self.context = context
        self.options = from_mapping(WebOptions, dict(context.options), "oracle")
        self.token = secrets.token_urlsafe(18)
        self._lock = threading.Lock()
        self._inbox: queue.Queue[Label] = queue.Queue()
        self._in_flight: dict[int, Future[None]] = {}  # index -> its POST, waiting to be journaled
        self._items: dict[int, Query] = {}  # the round's items on the page, in order
        self._given: dict[int, int | str] = {}  # index -> label (or NONE_OF_THESE), journaled in this open round
        self._round: int | None = None
        self._open = False  # a round is open: labels and undos are taken
        self._version = 0  # bumped on every change the page should redraw for
        self._png: dict[int, bytes] = {}
        self._server, self._thread, self.url = self._serve()

    # ------------------------------------------------------------------ the loop's side

    def request(self, items: Sequence[Query]) -> None:
        with self._lock:
            if items and items[0].round != self._round:
                self._round, self._items, self._given, self._png = items[0].round, {}, {}, {}
            self._items.update((q.index, q) for q in items)
            self._open = True
            self._version += 1

    def collect(self, *, timeout: float | None = None) -> list[Label]:
        while True:  # short waits, so that Ctrl+C reaches the loop
            if self._server.should_exit:
                raise AlabError("the labeling page is closed")
            try:
                labels = [self._inbox.get(timeout=0.5 if timeout is None else timeout)]
                break
            except queue.Empty:
                if timeout is not None:
                    return []
        while not self._inbox.empty():
            labels.append(self._inbox.get_nowait())
        return labels

    def acknowledge(self, labels: Sequence[Label]) -> None:
        with self._lock:
            for label in labels:
                if label.source == UNDO:
                    self._given.pop(label.index, None)
                else:
                    self._given[label.index] = label.label
                self._in_flight.pop(label.index).set_result(None)
            if self._given.keys() >= self._items.keys():  # every item labeled: the loop retrains now
                self._open = False
                while not self._inbox.empty():  # an undo that came too late for this round
                    late = self._inbox.get_nowait()
                    self._in_flight.pop(late.index).set_exception(
                        Refused(409, "the round is closed: the model is retraining on its labels")
                    )
            self._version += 1

    def close(self) -> None:
        with self._lock:
            self._open = False
            for future in self._in_flight.values():
                future.set_exception(Refused(503, "the run stopped before this label was saved"))
            self._in_flight = {}
        self._server.should_exit = True
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ the page's side

    def _pending(self) -> list[int]:
        return [i for i in self._items if i not in self._given and i not in self._in_flight]

    def state(self) -> dict[str, Any]:
        ctx = self.context
        with self._lock:
            items = []
            for index, query in self._items.items():
                image = self._image(query) is not None
                items.append(
                    {
                        "index": index,
                        "label": self._given.get(index),
                        "busy": index in self._in_flight,
                        "top": top_classes(query.view, ctx.classes),
                        "score": query.view.get("score"),
                        "outside": bool(query.view.get("outside", False)),
                        "image": image,
                        "text": query.text,
                        "features": [] if image or query.payload is None else feature_rows(query.payload, names=ctx.dataset.feature_names),
                    }
                )
            return {
                "version": self._version,
                "status": "labeling" if self._open else ("training" if self._round is not None else "starting"),
                "round": self._round,
                "rounds": ctx.rounds,
                "classes": list(ctx.classes),
                "items": items,
                "undoable": list(self._given) if self._open else [],  # labeled in this round, oldest first
            }

    def _image(self, query: Query) -> Any:
        return display_image(self.context.dataset.name, query.payload) if query.payload is not None else None

    def png(self, index: int) -> bytes:
        with self._lock:
            query = self._items.get(index)
            if query is None:
                raise Refused(404, f"item {index} is not on this page")
            if index not in self._png:
                image = self._image(query)
                if image is None:
                    raise Refused(404, f"item {index} is not an image")
                self._png[index] = png_bytes(image)
            return self._png[index]

    def submit(self, index: Any, label: Any, *, undo: bool = False) -> Future[None]:
        """Queue a label (or an undo) for the loop; the future resolves once it is journaled."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise Refused(400, f"index must be an integer, got {index!r}")
        with self._lock:
            if not self._open:
                raise Refused(409, "no round is open: the model is training, wait for the next batch")
            if undo:
                if index not in self._given or index in self._in_flight:
                    raise Refused(409, f"item {index} has no saved label in this round to undo")
                message = Label(index, self._given[index], UNDO)
            else:
                classes = self.context.classes
                is_class = not isinstance(label, bool) and isinstance(label, int) and 0 <= label < len(classes)
                if not is_class and label != NONE_OF_THESE:
                    raise Refused(400, f"label must be a class number 0..{len(classes) - 1} or {NONE_OF_THESE!r}, got {label!r}")
                if index not in self._pending():
                    raise Refused(409, f"item {index} is not pending in this round")
                message = Label(index, label, "web")
            future: Future[None] = Future()
            self._in_flight[index] = future
            self._inbox.put(message)
            self._version += 1
            return future

    # ------------------------------------------------------------------ the server

    def _serve(self) -> tuple[Any, threading.Thread, str]:
        server, thread, address = serve(build_app(self), self.options.host, self.options.port, "the labeling page")
        url = f"{address}/?token={self.token}"
        self.context.echo(f"label in your browser: {url}")
        if self.options.open_browser:
            webbrowser.open(url)
        return server, thread, url


def build_app(oracle: WebOracle) -> Any:
    """The Starlette app: the page, its state, item images, label and undo; every route needs the token."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    page = resources.files("alab.oracles").joinpath("web_page.html").read_text(encoding="utf-8")

    def refused(err: Refused) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        return JSONResponse(oracle.state(), headers={"Cache-Control": "no-store"})

    async def image(request: Request) -> Response:
        try:
            return Response(oracle.png(request.path_params["index"]), media_type="image/png")
        except Refused as err:
            return refused(err)

    async def answer(request: Request, undo: bool) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            future = oracle.submit(body.get("index"), body.get("label"), undo=undo)
            await asyncio.wrap_future(future)  # returns once the label is in labels.csv
        except Refused as err:
            return refused(err)
        return JSONResponse({"saved": body.get("index"), "undone": undo})

    async def label(request: Request) -> Response:
        return await answer(request, undo=False)

    async def undo(request: Request) -> Response:
        return await answer(request, undo=True)

    class TokenGate:
        """Refuse (403) any request that does not carry the token (query `token` or header X-Alab-Token)."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                request = Request(scope)
                given = request.query_params.get("token") or request.headers.get("x-alab-token") or ""
                if not secrets.compare_digest(given.encode(), oracle.token.encode()):
                    await PlainTextResponse("forbidden: missing or wrong token", status_code=403)(scope, receive, send)
                    return
            await self.app(scope, receive, send)

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/items/{index:int}.png", image),
        Route("/api/label", label, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
    ]
    return TokenGate(Starlette(routes=routes))


def check_web(context: OracleContext) -> None:
    from_mapping(WebOptions, dict(context.options), "oracle")


@register_oracle("web", "a person in a browser: a local labeling page on 127.0.0.1 with an access token", check_web)
def make_web(context: OracleContext) -> WebOracle:
    check_web(context)
    return WebOracle(context)
