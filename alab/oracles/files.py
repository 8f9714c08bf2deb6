"""File exchange: the queries go out as files (a CSV, PNGs, Label Studio tasks); answers come back by import.

`alab run --oracle files` writes `DIR/queries/round-N/`:

- `queries.csv`: index, file, label (empty: fill it with a class name), model_guess, model_prob, score
  (and the features x0, x1, ... for data that is not an image);
- `item-<index>.png`: each queried image;
- `tasks.json` and `label_config.xml`: the same items as Label Studio tasks (images inline as data
  URIs, the model's guess as a prediction) and a labeling interface with one choice per class.

then the run stops with status "waiting". `alab label import DIR FILE` reads the filled CSV or Label
Studio's JSON export (see `read_answers`), and `alab resume DIR` continues.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

from alab.errors import AlabError
from alab.oracles.base import Label, LabelingPaused, OracleContext, Query, no_options, register_oracle
from alab.oracles.render import display_image, feature_line, feature_rows, png_bytes, top_classes
from alab import storage  # the module, not its names: alab.storage imports alab.oracles.base in turn

FROM_NAME, TO_NAME = "label", "image"  # the Label Studio control and object names in label_config.xml


class FilesOracle:
    """Writes each round's queries to files and pauses the run until the answers are imported."""

    def __init__(self, context: OracleContext) -> None:
        no_options("files")(context)
        self.context = context
        self.folder: Path | None = None
        self.count = 0

    def request(self, items: Sequence[Query]) -> None:
        if not items:
            return
        ctx = self.context
        self.folder = Path(ctx.run_dir) / "queries" / f"round-{items[0].round}"
        self.folder.mkdir(parents=True, exist_ok=True)
        rows, tasks = [], []
        for query in items:
            row: dict[str, object] = {"index": query.index, "file": "", "label": ""}
            guess = top_classes(query.view, ctx.classes, k=1)
            row.update(model_guess=guess[0][0] if guess else "", model_prob=round(guess[0][1], 4) if guess else "")
            row["score"] = round(query.view["score"], 6) if "score" in query.view else ""
            image = display_image(ctx.dataset.name, query.payload) if query.payload is not None else None
            task: dict[str, object] = {"data": {"index": query.index}}
            if image is not None:
                png = png_bytes(image)
                row["file"] = f"item-{query.index}.png"
                storage.atomic_write_bytes(self.folder / str(row["file"]), png)
                task["data"] = {"index": query.index, "image": "data:image/png;base64," + base64.b64encode(png).decode()}
            elif query.text is not None:
                row["text"] = query.text
                task["data"] = {"index": query.index, "text": query.text}
            elif query.payload is not None:
                names = ctx.dataset.feature_names
                row.update(feature_rows(query.payload, limit=10_000, names=names))
                shown = feature_rows(query.payload, names=names)
                task["data"] = {"index": query.index, "text": feature_line(shown), **dict(shown)}
            if guess:
                choice = {"choices": [guess[0][0]]}
                result = [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": choice}]
                task["predictions"] = [{"model_version": "alab", "score": guess[0][1], "result": result}]
            rows.append(row)
            tasks.append(task)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        storage.atomic_write_text(self.folder / "queries.csv", text.getvalue())
        storage.atomic_write_text(self.folder / "tasks.json", json.dumps(tasks, indent=1) + "\n")
        kind = "image" if "image" in tasks[0]["data"] else "text"  # type: ignore[operator]
        storage.atomic_write_text(self.folder / "label_config.xml", label_config(ctx.classes, kind))
        self.count = len(items)

    def collect(self, *, timeout: float | None = None) -> list[Label]:
        folder, run_dir = self.folder, self.context.run_dir
        raise LabelingPaused(
            f"{self.count} items to label in {folder}: fill the label column of queries.csv with class names "
            f"({', '.join(self.context.classes)}) or label tasks.json in Label Studio, then run "
            f"`alab label import {run_dir} FILE` and `alab resume {run_dir}`"
        )

    def acknowledge(self, labels: Sequence[Label]) -> None:
        pass  # labels arrive by `alab label import`, which journals them itself

    def close(self) -> None:
        pass


@register_oracle("files", "queries to files (CSV, PNG, Label Studio tasks); answers by `alab label import`", no_options("files"))
def make_files(context: OracleContext) -> FilesOracle:
    return FilesOracle(context)


def label_config(classes: Sequence[str], kind: str = "image") -> str:
    """A Label Studio labeling interface: the item (`kind` "image": $image, "text": $text), one choice per class."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    item = f'<Image name="{TO_NAME}" value="$image"/>' if kind == "image" else f'<Text name="{TO_NAME}" value="$text"/>'
    return (
        f'<View>\n  {item}\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInLine="true">\n{choices}\n  </Choices>\n</View>\n'
    )


def read_answers(path: Path) -> tuple[list[tuple[int, str, str]], str]:
    """((where, index, class name) per answered item, source) from a filled queries.csv or a Label Studio export.

    CSV: columns `index` and `label` (a class name; an empty label is an item not yet answered).
    Label Studio JSON export: a list of tasks with `data.index` and `annotations[].result[].value.choices`
    (the last annotation not cancelled counts), or the JSON-MIN export (`index` and `label` per task).
    `where` locates the answer for an error message.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise AlabError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise AlabError(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8 CSV or JSON") from None
    if path.suffix.lower() == ".json":
        return _read_label_studio(path, text), "label-studio"
    if "\0" in text:
        raise AlabError(f"{path} holds NUL bytes; it is not a CSV text file")
    try:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or not {"index", "label"} <= set(reader.fieldnames):
            raise AlabError(f"{path} needs the columns index and label (as in queries.csv)")
        answers = []
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip()
            if label:
                answers.append((f"{path} line {line}", _index(row["index"], f"{path} line {line}"), label))
    except csv.Error as err:
        raise AlabError(f"{path} is not valid CSV: {err}") from None
    return answers, "files"


def _index(value: object, where: str) -> int:
    if isinstance(value, (bool, float, list, dict)):
        raise AlabError(f"{where}: index {value!r} is not a pool index (an integer)")
    try:
        return int(str(value).strip())
    except ValueError:
        raise AlabError(f"{where}: index {value!r} is not a pool index (an integer)") from None


def _field(obj: object, key: str, where: str) -> object:
    """`obj[key]` of a JSON object (None if absent); AlabError if `obj` is not an object."""
    if not isinstance(obj, dict):
        raise AlabError(f"{where} is not a JSON object, got {json.dumps(obj)[:40]}")
    return obj.get(key)


def _list(obj: object, where: str) -> list[object]:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise AlabError(f"{where} is not a JSON list, got {json.dumps(obj)[:40]}")
    return obj


def _read_label_studio(path: Path, text: str) -> list[tuple[int, str, str]]:
    try:
        tasks = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise AlabError(f"{path} is not valid JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(tasks, list):
        raise AlabError(f"{path} is not a Label Studio export (expected a list of tasks)")
    answers = []
    for n, task in enumerate(tasks):
        where = f"{path} task {n + 1}"
        if not isinstance(task, dict):
            raise AlabError(f"{where} is not a task object")
        if "annotations" in task:  # the full JSON export
            data = task.get("data") or {}
            choices = None
            for a, annotation in enumerate(_list(task["annotations"], f"{where} annotations")):
                if _field(annotation, "was_cancelled", f"{where} annotation {a + 1}"):
                    continue
                for result in _list(_field(annotation, "result", f"{where} annotation {a + 1}"), f"{where} result"):
                    if _field(result, "type", f"{where} result") == "choices" and result.get("from_name", FROM_NAME) == FROM_NAME:
                        choices = _field(result.get("value") or {}, "choices", f"{where} result value")
            if choices is None:
                continue  # not labeled yet
            if not isinstance(choices, list) or len(choices) != 1:
                raise AlabError(f"{where}: expected one choice, got {json.dumps(choices)[:40]}")
            label, index = choices[0], _field(data, "index", f"{where} data")
        else:  # JSON-MIN: the task's data with the choice under the control's name
            label, index = task.get(FROM_NAME), task.get("index")
            if label in (None, ""):
                continue
        if index is None:
            raise AlabError(f"{where} has no data.index (the pool index alab put in tasks.json)")
        if not isinstance(label, (str, int)) or isinstance(label, bool):
            raise AlabError(f"{where}: the label must be a class name, got {json.dumps(label)[:40]}")
        answers.append((where, _index(index, where), str(label)))
    return answers
