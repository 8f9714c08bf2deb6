"""The terminal labeler: each item drawn with Unicode half-blocks, its label typed at a prompt.

At the prompt: a class name (or its number) labels the item; `-` answers "none of these" (an item
from outside the classes: journaled, kept out of training, never asked again); `s` skips it (it comes
back at the end), `u` undoes the round's last label, `q` quits (the run waits; `alab resume DIR` asks
for the rest), `?` shows this help. "saved" is printed only once the label is in labels.csv. An item
whose epistemic uncertainty is above the bar (`alab.tasks.OUTSIDE_QUANTILE`) is marked as possibly
outside the classes.
"""

from __future__ import annotations

import textwrap
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from alab.oracles.base import (
    NONE_OF_THESE, UNDO, Label, LabelingPaused, OracleContext, Query, label_name, no_options, register_oracle,
)  # fmt: skip
from alab.oracles.render import display_image, feature_rows, half_blocks, top_classes

HELP = "type a class name or number to label; - none of these, s skip, u undo the last label, q quit (resume later), ? help"


class TerminalOracle:
    """Asks a person at the terminal, one item at a time."""

    def __init__(self, context: OracleContext) -> None:
        no_options("terminal")(context)
        self.context = context
        self.queue: deque[Query] = deque()
        self.done: list[tuple[Query, int | str]] = []  # this round's labeled items, for undo
        self.round: int | None = None
        self.total = 0

    def request(self, items: Sequence[Query]) -> None:
        if items and items[0].round != self.round:
            self.round, self.done, self.total = items[0].round, [], len(items)
        self.queue.extend(items)

    def collect(self, *, timeout: float | None = None) -> list[Label]:
        classes = self.context.classes
        names = " · ".join(c if c == str(i) else f"{i} {c}" for i, c in enumerate(classes))
        while True:
            query = self.queue[0]
            self._show(query)
            try:
                answer = input(f"label ({names}; - none of these, s skip, u undo, q quit, ? help) > ").strip()
            except EOFError:
                answer = "q"
            if answer == "q":
                raise LabelingPaused(
                    f"labeling stopped with {len(self.queue)} items of round {self.round} left; "
                    f"`alab resume {Path(self.context.run_dir)}` asks for exactly those"
                )
            if answer == "?":
                print(HELP)
            elif answer == "s":
                self.queue.rotate(-1)
            elif answer == "u":
                if self.done:
                    last, label = self.done[-1]
                    return [Label(last.index, label, UNDO)]
                print("nothing to undo in this round")
            elif answer == "-":
                return [Label(query.index, NONE_OF_THESE, "terminal")]
            elif answer in classes:
                return [Label(query.index, classes.index(answer), "terminal")]
            elif answer.isdigit() and int(answer) < len(classes):
                return [Label(query.index, int(answer), "terminal")]
            else:
                print(f"{answer!r} is not a class; {HELP}")

    def acknowledge(self, labels: Sequence[Label]) -> None:
        for label in labels:
            if label.source == UNDO:
                query, _ = self.done.pop()
                self.queue.appendleft(query)
                print(f"undone: item {label.index} is to label again")
            else:
                query = self.queue.popleft()
                self.done.append((query, label.label))
                print(f"saved: item {label.index} is {label_name(label.label, self.context.classes)}")

    def close(self) -> None:
        self.queue.clear()

    def _show(self, query: Query) -> None:
        ctx = self.context
        position = f"item {len(self.done) + 1} of {self.total}"
        title = "initial set" if query.round == 0 else f"round {query.round} of {ctx.rounds}"
        print(f"\n{title} · {position} · pool item {query.index}")
        image = display_image(ctx.dataset.name, query.payload) if query.payload is not None else None
        if image is not None:
            print(half_blocks(image))
        elif query.text is not None:
            print(textwrap.fill(query.text, width=100))
        elif query.payload is not None:
            rows = feature_rows(query.payload, limit=16, names=ctx.dataset.feature_names)
            print("  ".join(f"{name}={value:g}" for name, value in rows))
        guesses = top_classes(query.view, ctx.classes)
        if guesses:
            model = " · ".join(f"{name} {p:.0%}" for name, p in guesses)
            print(f"model: {model}   acquisition score {query.view.get('score', float('nan')):.3f}")
        if query.view.get("outside"):
            print("possibly none of these classes: the model is far less sure of it than of the test set's items (- answers none of these)")


@register_oracle("terminal", "a person at the terminal: images in half-blocks, labels typed at a prompt", no_options("terminal"))
def make_terminal(context: OracleContext) -> TerminalOracle:
    return TerminalOracle(context)
