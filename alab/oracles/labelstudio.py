"""Label Studio as the labeling front end: alab is the active learning brain behind a team's project.

`alab run --oracle labelstudio` (settings in an `[oracle]` table, the access token in the
environment variable `LABEL_STUDIO_API_KEY`, never in config.toml) connects to a running Label
Studio through its official SDK (`label-studio-sdk`, `pip install -e '.[labelstudio]'`):

- it creates a project for the run (or connects to `project = ID`, whose labeling interface must
  have a Choices control with every class as a choice), and registers on it a webhook and an ML
  backend, both served by alab on 127.0.0.1 (`host`, `port`) behind a token;
- each round it imports the queried items as tasks (the image inline as a data URI, or a table's
  features as text), each with the model's guess as a prediction whose score is the acquisition score, so the
  team labels in "sort by prediction score" order; the ML backend protocol (`/health`, `/setup`,
  `/predict`) serves the same predictions to Label Studio when it asks;
- each annotation webhook (`/webhook`) is journaled (labels.csv, fsynced) before it is answered; a
  label changed while its round is open is undone and journaled again; a choice outside the classes
  is refused with one line. The loop retrains once every item of the round is labeled.

Webhooks are not retried by Label Studio, so the oracle also reads the round's annotations through
the SDK every `poll_seconds` and on every (re)start: an annotation saved while alab was down is
journaled on `alab resume`, and only the items still missing are asked for. Tasks are found again by
their data (`index`, `alab_round`, `alab_run`), so a crash between an import and anything after it
never imports an item twice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import secrets
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from alab import storage
from alab.config import from_mapping
from alab.errors import AlabError
from alab.oracles.base import NONE_OF_THESE, UNDO, Label, OracleContext, Query, register_oracle
from alab.oracles.render import display_image, feature_line, feature_rows, png_bytes, top_classes
from alab.oracles.serving import serve

NONE_CHOICE = "none of these"  # the choice that answers NONE_OF_THESE
STATE_FILE = "labelstudio.json"  # the run's project, webhook and ML backend ids in Label Studio
WHOAMI = "check the access token"


@dataclass(frozen=True)
class LabelStudioOptions:
    """The `[oracle]` table of `--oracle labelstudio`."""

    url: str = "http://127.0.0.1:8080"  # the Label Studio server
    api_key_env: str = "LABEL_STUDIO_API_KEY"  # the environment variable that holds the access token
    project: int = 0  # an existing project's id; 0: create one for the run
    host: str = "127.0.0.1"  # where alab serves its webhook and ML backend
    port: int = 0  # 0: any free port
    public_url: str = ""  # how Label Studio reaches that server, when not http://host:port (a container, say)
    poll_seconds: float = 5.0  # how often the round's annotations are read back, for any missed webhook

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise AlabError(f"oracle.port must be in 0..65535, got {self.port}")
        if self.poll_seconds <= 0:
            raise AlabError(f"oracle.poll_seconds must be positive, got {self.poll_seconds}")
        if not self.url.startswith(("http://", "https://")):
            raise AlabError(f"oracle.url must be an http(s) address of Label Studio, got {self.url!r}")


@dataclass(frozen=True)
class Interface:
    """What alab needs of a labeling interface: the Choices control, the object it labels, its data key."""

    from_name: str
    to_name: str
    data_key: str
    choices: tuple[str, ...]


class Refused(Exception):
    """A webhook alab does not journal: HTTP `status` with a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def label_config(classes: Sequence[str], kind: str) -> str:
    """A labeling interface for the run's items (kind "image", or "text": a table's features): a choice per class and "none of these"."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in (*classes, NONE_CHOICE))
    item = '<Image name="item" value="$item"/>' if kind == "image" else '<Text name="item" value="$item"/>'
    return (
        f"<View>\n  {item}\n  <Header value=\"$alab_hint\"/>\n"
        f'  <Choices name="label" toName="item" choice="single" showInLine="true">\n{choices}\n  </Choices>\n</View>\n'
    )


def parse_interface(config_xml: str, classes: Sequence[str]) -> Interface:
    """The interface of a project's label config; AlabError if it cannot take the run's classes."""
    try:
        root = ElementTree.fromstring(config_xml)
    except ElementTree.ParseError as err:
        raise AlabError(f"the project's labeling interface is not valid XML: {err}") from None
    control = next(root.iter("Choices"), None)
    if control is None or not control.get("name") or not control.get("toName"):
        raise AlabError("the project's labeling interface has no Choices control with a name and toName; add one with a choice per class")
    target = next((tag for tag in root.iter() if tag.get("name") == control.get("toName")), None)
    value = target.get("value", "") if target is not None else ""
    if not value.startswith("$"):
        raise AlabError(f"the project's Choices label {control.get('toName')!r}, which shows no task data ($key); point toName at an Image or Text tag")
    choices = tuple(choice.get("value", "") for choice in control.iter("Choice"))
    missing = [c for c in classes if c not in choices]
    if missing:
        raise AlabError(f"the project's Choices control lacks the classes {', '.join(missing)}; add them as choices")
    return Interface(control.get("name", ""), control.get("toName", ""), value[1:], choices)


class LabelStudioOracle:
    """Queries out as Label Studio tasks; annotations in by webhook and by reading them back."""

    def __init__(self, context: OracleContext) -> None:
        self.context = context
        self.options = from_mapping(LabelStudioOptions, dict(context.options), "oracle")
        self.client = connect(self.options)
        self.run_id = Path(context.run_dir).resolve().name
        self.state_path = Path(context.run_dir) / STATE_FILE
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.token = secrets.token_urlsafe(18)
        self._lock = threading.Lock()
        self._inbox: queue.Queue[Label] = queue.Queue()
        self._in_flight: dict[int, Future[None]] = {}  # index -> its webhook, waiting to be journaled
        self._relabel: dict[int, int | str] = {}  # index -> the label to journal once its undo is
        self._items: dict[int, Query] = {}  # the open round's items
        self._tasks: dict[int, int] = {}  # Label Studio task id -> pool index, this round's
        self._given: dict[int, int | str] = {}  # index -> label journaled in the open round
        self._round: int | None = None
        self._last_sync = 0.0
        self.project, self.interface = self._project()
        self._server, self._thread, self.server_url = serve(build_app(self), self.options.host, self.options.port, "alab's Label Studio endpoints")
        self._register()

    # ------------------------------------------------------------------ Label Studio's side

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        return call_label_studio(self.options, what, call, *args, **kwargs)

    def _project(self) -> tuple[int, Interface]:
        dataset = self.context.dataset
        shown = dataset.x_shown_pool if dataset.x_shown_pool is not None else dataset.x_pool
        image = dataset.text_pool is None and display_image(dataset.name, shown[0]) is not None
        kind = "image" if image else "text"  # a table: its features as text
        project_id = self.options.project or self.state.get("project", 0)
        if not project_id:
            title = f"alab {self.run_id}"[:50]
            created = self._call("create a project", self.client.projects.create, title=title, label_config=label_config(self.context.classes, kind))
            project_id = int(created.id)
            self._save_state(project=project_id)
        project = self._call(f"read project {project_id}", self.client.projects.get, id=project_id)
        return project_id, parse_interface(project.label_config or "", self.context.classes)

    def _save_state(self, **changes: Any) -> None:
        self.state.update(changes)
        storage.atomic_write_text(self.state_path, json.dumps(self.state, indent=1) + "\n")

    def _register(self) -> None:
        """The webhook and the ML backend of this process, replacing those of an earlier one of the run."""
        for key, remove in (("webhook", self.client.webhooks.delete), ("ml_backend", self.client.ml.delete)):
            if self.state.get(key):
                try:
                    remove(id=self.state[key])
                except Exception:  # gone already (deleted in Label Studio by a person): nothing to replace
                    pass
        url = self.options.public_url.rstrip("/") or self.server_url
        try:
            hook = self._call(
                "register the webhook", self.client.webhooks.create, url=f"{url}/webhook", project=self.project,
                headers={"X-Alab-Token": self.token}, send_payload=True, send_for_all_actions=False,
                actions=["ANNOTATION_CREATED", "ANNOTATION_UPDATED"],
            )  # fmt: skip
            self._save_state(webhook=int(hook.id))
        except ReservedAddress:
            self._save_state(webhook=0)
            self.context.echo(
                f"Label Studio will not send webhooks to {url} (SSRF protection): annotations are read back every "
                f"{self.options.poll_seconds:g} s instead; start Label Studio with SSRF_PROTECTION_ENABLED=false for webhooks"
            )
        try:
            backend = self._call(
                f"connect alab's ML backend at {url} (is it reachable from Label Studio? set oracle.public_url)",
                self.client.ml.create, project=self.project, url=url, title="alab", auth_method="BASIC_AUTH",
                basic_auth_user="alab", basic_auth_pass=self.token, is_interactive=False,
            )  # fmt: skip
            self._save_state(ml_backend=int(backend.id))
        except ReservedAddress:
            self._save_state(ml_backend=0)
            self.context.echo(
                f"Label Studio will not call an ML backend at {url} (ML_BLOCK_LOCAL_IP): predictions come with the tasks "
                "instead; start Label Studio with ML_BLOCK_LOCAL_IP=false to connect it"
            )

    def _task_data(self, query: Query) -> dict[str, Any]:
        key = self.interface.data_key
        data: dict[str, Any] = {"index": query.index, "alab_round": query.round, "alab_run": self.run_id}
        image = display_image(self.context.dataset.name, query.payload) if query.payload is not None else None
        if image is not None:
            data[key] = "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()
        elif query.text is not None:
            data[key] = query.text
        else:
            data[key] = feature_line(feature_rows(query.payload, names=self.context.dataset.feature_names))
        score = query.view.get("score")
        guess = top_classes(query.view, self.context.classes, k=1)
        data["alab_hint"] = (
            f"round {query.round}: model's guess {guess[0][0]} ({guess[0][1]:.0%}), acquisition score {score:.4g}"
            if guess and score is not None else f"round {query.round}"
        )  # fmt: skip
        return data

    def _prediction(self, query: Query) -> dict[str, Any] | None:
        guess = top_classes(query.view, self.context.classes, k=1)
        if not guess:
            return None
        value = {"choices": [guess[0][0]]}
        result = [{"from_name": self.interface.from_name, "to_name": self.interface.to_name, "type": "choices", "value": value}]
        return {"model_version": f"alab-round-{query.round}", "score": float(query.view.get("score", guess[0][1])), "result": result}

    def _round_tasks(self, round_: int) -> dict[int, Any]:
        """This run's tasks of `round_` in the project, by pool index (with their annotations)."""
        found: dict[int, Any] = {}
        for task in self._call("list the project's tasks", self.client.tasks.list, project=self.project, fields="all"):
            data = task.data or {}
            if data.get("alab_run") == self.run_id and data.get("alab_round") == round_ and "index" in data:
                found[int(data["index"])] = task
        return found

    # ------------------------------------------------------------------ the loop's side

    def request(self, items: Sequence[Query]) -> None:
        if not items:
            return
        round_ = items[0].round
        existing = self._round_tasks(round_)
        new = [q for q in items if q.index not in existing]
        if new:
            tasks = []
            for query in new:
                task: dict[str, Any] = {"data": self._task_data(query)}
                prediction = self._prediction(query)
                if prediction is not None:
                    task["predictions"] = [prediction]
                tasks.append(task)
            self._call(f"import round {round_}'s {len(tasks)} tasks", self.client.projects.import_tasks, id=self.project, request=tasks)
            existing = self._round_tasks(round_)
        with self._lock:
            if round_ != self._round:
                self._round, self._items, self._given, self._relabel = round_, {}, {}, {}
            self._items.update((q.index, q) for q in items)
            self._tasks = {int(task.id): index for index, task in existing.items()}
        self.context.echo(
            f"round {round_}: {len(items)} items to label in Label Studio, project {self.project}: "
            f"{self.options.url.rstrip('/')}/projects/{self.project}/data"
        )
        self._sync()

    def collect(self, *, timeout: float | None = None) -> list[Label]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # short waits, so that Ctrl+C reaches the loop
            if time.monotonic() - self._last_sync >= self.options.poll_seconds:
                self._sync()
            try:
                labels = [self._inbox.get(timeout=0.25)]
                break
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
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
                future = self._in_flight.pop(label.index, None)
                again = self._relabel.pop(label.index, None) if label.source == UNDO else None
                if again is not None:  # the undo of a changed label is journaled: now the new one
                    self._in_flight[label.index] = future or Future()
                    self._inbox.put(Label(label.index, again, "labelstudio"))
                elif future is not None:
                    future.set_result(None)

    def close(self) -> None:
        with self._lock:
            for future in self._in_flight.values():
                if not future.done():
                    future.set_exception(Refused(503, "the run stopped before this label was saved"))
            self._in_flight = {}
        for key, remove in (("webhook", self.client.webhooks.delete), ("ml_backend", self.client.ml.delete)):
            if self.state.get(key):
                try:
                    remove(id=self.state[key])
                except Exception:  # the server is gone or the person removed it: nothing left to clean up
                    pass
        self._server.should_exit = True
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ annotations in

    def _sync(self) -> None:
        """Read the open round's annotations back: every labeled item not yet journaled or on its way."""
        self._last_sync = time.monotonic()
        round_ = self._round
        if round_ is None:
            return
        for index, task in self._round_tasks(round_).items():
            annotations = [a for a in (task.annotations or []) if not _get(a, "was_cancelled")]
            if annotations:
                try:
                    self.submit(int(task.id), _get(annotations[-1], "result") or [])
                except Refused as err:
                    if err.status == 400:
                        self.context.echo(f"Label Studio task {task.id}: {err}")

    def choice(self, result: Any) -> int | str:
        """The class index (or NONE_OF_THESE) an annotation's result chooses; Refused(400) if none of the classes."""
        picked = [
            r.get("value", {}).get("choices") for r in (result if isinstance(result, list) else [])
            if isinstance(r, dict) and r.get("type") == "choices" and r.get("from_name") == self.interface.from_name
        ]  # fmt: skip
        if len(picked) != 1 or not isinstance(picked[0], list) or len(picked[0]) != 1:
            raise Refused(400, f"expected one choice of the {self.interface.from_name!r} control, got {json.dumps(result)[:80]}")
        name = picked[0][0]
        if name == NONE_CHOICE:
            return NONE_OF_THESE
        if name not in self.context.classes:
            raise Refused(400, f"label {name!r} is not a class ({', '.join(self.context.classes)}, or {NONE_CHOICE!r}); not saved")
        return self.context.classes.index(name)

    def submit(self, task_id: int, result: Any) -> Future[None]:
        """Queue an annotation's label for the loop; the future resolves once it is journaled."""
        label = self.choice(result)
        with self._lock:
            index = self._tasks.get(task_id)
            if index is None or index not in self._items:
                raise Refused(409, f"task {task_id} is not among the open round's items")
            if index in self._in_flight:
                return self._in_flight[index]
            future: Future[None] = Future()
            if index in self._given:
                if self._given[index] == label:
                    future.set_result(None)  # journaled already (a webhook and a read-back both saw it)
                    return future
                self._relabel[index] = label  # changed while the round is open: undo, then the new label
                message = Label(index, self._given[index], UNDO)
            else:
                message = Label(index, label, "labelstudio")
            self._in_flight[index] = future
            self._inbox.put(message)
            return future

    def predictions(self, tasks: Any) -> list[dict[str, Any]]:
        """The ML backend's /predict: the model's guess for each task of the open round ({} for others)."""
        results = []
        with self._lock:
            for task in tasks if isinstance(tasks, list) else []:
                index = self._tasks.get(task.get("id")) if isinstance(task, dict) else None
                query = self._items.get(index) if index is not None else None
                prediction = self._prediction(query) if query is not None else None
                results.append(prediction or {"result": [], "score": 0.0, "model_version": "alab"})
        return results

    # ------------------------------------------------------------------ alab's server

def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def build_app(oracle: LabelStudioOracle) -> Any:
    """The webhook (token in X-Alab-Token) and the ML backend protocol (basic auth, password the token)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def authorized(request: Request) -> bool:
        given = request.headers.get("x-alab-token", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                given = base64.b64decode(auth[6:]).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        return secrets.compare_digest(given.encode(), oracle.token.encode())

    async def body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "UP", "model_class": "alab"})

    async def setup(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "forbidden: missing or wrong token"}, status_code=403)
        return JSONResponse({"model_version": f"alab-round-{oracle._round}"})

    async def predict(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "forbidden: missing or wrong token"}, status_code=403)
        payload = await body(request)
        return JSONResponse({"results": oracle.predictions(payload.get("tasks") if isinstance(payload, dict) else None)})

    async def webhook(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "forbidden: missing or wrong token"}, status_code=403)
        payload = await body(request)
        annotation = payload.get("annotation") if isinstance(payload, dict) else None
        if not isinstance(annotation, dict) or payload.get("action") not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            return JSONResponse({"ignored": "not an annotation event"})
        if annotation.get("was_cancelled"):
            return JSONResponse({"ignored": "a skipped task"})
        task_id = annotation.get("task")
        task_id = task_id.get("id") if isinstance(task_id, dict) else task_id
        try:
            future = oracle.submit(int(task_id), annotation.get("result"))
            await asyncio.wrap_future(future)  # answered once the label is in labels.csv
        except Refused as err:
            if err.status == 400:
                oracle.context.echo(f"Label Studio task {task_id}: {err}")
            return JSONResponse({"error": str(err)}, status_code=err.status)
        except (TypeError, ValueError):
            return JSONResponse({"error": f"task {task_id!r} is not a task id"}, status_code=400)
        return JSONResponse({"saved": task_id})

    routes = [
        Route("/health", health),
        Route("/", health),
        Route("/setup", setup, methods=["POST"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/webhook", webhook, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def connect(options: LabelStudioOptions) -> Any:
    """An SDK client whose token Label Studio accepts; one-line AlabError otherwise."""
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise AlabError("--oracle labelstudio needs the Label Studio SDK: pip install label-studio-sdk (or pip install -e '.[labelstudio]' in the alab clone)") from None
    api_key = os.environ.get(options.api_key_env, "")
    if not api_key:
        raise AlabError(f"set {options.api_key_env} to your Label Studio access token (Account & Settings > Access Token)")
    client = LabelStudio(base_url=options.url, api_key=api_key, timeout=30)
    call_label_studio(options, WHOAMI, client.users.whoami)
    return client


def call_label_studio(options: LabelStudioOptions, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)` of the SDK, its failures as one line that says what to do."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return call(*args, **kwargs)
    except httpx.TransportError as err:
        raise AlabError(f"cannot reach Label Studio at {options.url} to {what} ({type(err).__name__}); start it or fix oracle.url") from None
    except ApiError as err:
        detail = str(err.body.get("detail", "")) if isinstance(err.body, dict) else str(err.body or "")
        if err.status_code == 403 and "reserved network address" in detail:
            raise ReservedAddress(detail) from None
        if err.status_code == 401 or (err.status_code == 403 and what == WHOAMI):
            raise AlabError(f"Label Studio at {options.url} refused the token in {options.api_key_env} ({err.status_code}); copy it from Account & Settings") from None
        raise AlabError(f"Label Studio could not {what} (HTTP {err.status_code}): {detail[:160]}") from None


class ReservedAddress(Exception):
    """Label Studio's SSRF protection refuses to call a local address (a webhook's, an ML backend's)."""


def check_labelstudio(context: OracleContext) -> None:
    options = from_mapping(LabelStudioOptions, dict(context.options), "oracle")
    if options.api_key_env and not options.api_key_env.replace("_", "").isalnum():
        raise AlabError(f"oracle.api_key_env must name an environment variable, got {options.api_key_env!r}")


@register_oracle("labelstudio", "a team in Label Studio: tasks with predictions each round, annotations by webhook (docs/labeling.md)", check_labelstudio)
def make_labelstudio(context: OracleContext) -> LabelStudioOracle:
    check_labelstudio(context)
    return LabelStudioOracle(context)
