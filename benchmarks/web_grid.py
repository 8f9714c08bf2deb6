"""Labels per second in the web labeler's grid view, driven by key presses in headless Chromium.

    python benchmarks/web_grid.py                          # digits: the initial set of 30, then 2 rounds of 30
    python benchmarks/web_grid.py --batch 50 --pace 0.15   # a key every 0.15 s, as a quick person presses them
    python benchmarks/web_grid.py --direct                 # no relay: the raw rate, without the journal check

`alab run --oracle web` on the embedded digits set; the page opens with `?view=grid` and each batch is
labeled by pressing each tile's true class in turn (the cursor moves on by itself, so a key goes as
soon as the last one did: the POSTs are pipelined). Every POST passes through Playwright, which,
once the server has answered, reads labels.csv (the label must be there: the server answers only
after journaling it), notes the time, and only then hands the answer to the page; a MutationObserver
notes when each tile shows saved. Both times are on this machine's clock, so "journaled before shown
saved" is measured, not assumed. The relay costs a few milliseconds a label: `--direct` drops it.

Prints, for each batch: its labels, the seconds from the first key press to the last tile saved, the
labels per second, the press-to-saved latency (median and max), and how many labels were in labels.csv
before their tile showed saved; then whether labels.csv holds exactly the labels pressed. Needs the
playwright package and Debian's chromium (/usr/bin/chromium; never `playwright install`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from labeling_helpers import Run, fast_config, journaled  # noqa: E402

from alab.data import load_dataset  # noqa: E402

WATCH = """() => {
  const now = () => performance.timeOrigin + performance.now();  // epoch ms, as Python's time.time() * 1000
  window.alabPresses = [];
  document.addEventListener("keydown", () => window.alabPresses.push(now()), true);
  new MutationObserver((records) => {
    for (const r of records) {
      const tile = r.target;
      if (tile.dataset.state === "saved" && r.oldValue !== "saved") window.alabSaved(Number(tile.dataset.index), now());
    }
  }).observe(document.getElementById("tiles"), {subtree: true, attributes: true, attributeFilter: ["data-state"], attributeOldValue: true});
}"""


def label_batch(page: Any, y_pool: Any, batch: int, pace: float, saved_at: dict[int, float]) -> tuple[list[int], list[float]]:
    """Press each pending tile's true class in grid order; returns the tiles and the page's press times (epoch ms)."""
    page.wait_for_function(f"document.querySelectorAll('#gridbox.on .tile[data-state=pending]').length === {batch}", timeout=600_000)
    order = [int(i) for i in page.eval_on_selector_all(".tile", "tiles => tiles.map((t) => t.dataset.index)")]
    page.evaluate("() => { window.alabPresses = []; }")
    for index in order:
        page.keyboard.press(str(int(y_pool[index])))
        if pace:
            page.wait_for_timeout(pace * 1000)  # not time.sleep: Playwright relays the POSTs only while it runs
    while not all(i in saved_at for i in order):
        page.wait_for_timeout(5)
    return order, page.evaluate("() => window.alabPresses")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=30, help="the initial set's size, and each round's")
    parser.add_argument("--rounds", type=int, default=2, help="rounds after the initial set")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between key presses (0: as fast as the page takes them)")
    parser.add_argument("--direct", action="store_true", help="no relay: the page talks to the server directly, unchecked")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    y_pool = load_dataset("digits").y_pool

    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "run" / "labels.csv"
        run = Run("run", "--config", str(fast_config(Path(tmp))), "--dataset", "digits", "--oracle", "web",
                  "--initial", str(args.batch), "--query-size", str(args.batch), "--rounds", str(args.rounds),
                  "--out", f"{tmp}/run")  # fmt: skip
        try:
            url = run.url()
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                saved_at: dict[int, float] = {}
                page.expose_binding("alabSaved", lambda source, index, at: saved_at.setdefault(index, at))
                checked_at: dict[int, float] = {}  # index -> when labels.csv was seen to hold it (epoch ms)

                def relay(route: Any) -> None:
                    answer = route.fetch()
                    index = int(route.request.post_data_json["index"])
                    if answer.ok and index in journaled(journal):
                        checked_at[index] = time.time() * 1000
                    route.fulfill(response=answer)

                if not args.direct:
                    page.route("**/api/label", relay)
                page.goto(url + "&view=grid")
                page.evaluate(WATCH)
                print(f"digits, batches of {args.batch}, {'keys as fast as the page takes them' if not args.pace else f'a key every {args.pace} s'}"
                      f"{', direct (unchecked)' if args.direct else ', each POST relayed and checked against labels.csv'}", flush=True)  # fmt: skip
                pressed: dict[int, str] = {}
                rates = []
                for round_ in range(args.rounds + 1):
                    order, presses = label_batch(page, y_pool, args.batch, args.pace, saved_at)
                    pressed |= {i: str(int(y_pool[i])) for i in order}
                    seconds = (max(saved_at[i] for i in order) - presses[0]) / 1000
                    latency_ms = [saved_at[i] - t for i, t in zip(order, presses, strict=True)]
                    before = sum(1 for i in order if i in checked_at and checked_at[i] <= saved_at[i])
                    rates.append(len(order) / seconds)
                    check = "" if args.direct else f"; {before} of {len(order)} in labels.csv before they showed saved"
                    print(f"round {round_}: {len(order)} labels in {seconds:.2f} s = {rates[-1]:.1f} labels/s; press to saved "
                          f"median {statistics.median(latency_ms):.0f} ms, max {max(latency_ms):.0f} ms{check}", flush=True)  # fmt: skip
                browser.close()
            run.proc.wait(timeout=600)
        finally:
            run.stop()
        print(f"\nslowest batch {min(rates):.1f} labels/s; labels.csv holds exactly the labels pressed: {journaled(journal) == pressed}")


if __name__ == "__main__":
    main()
