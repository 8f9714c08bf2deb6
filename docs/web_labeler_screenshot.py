"""Takes the web labeler's pictures in docs/, each of a run in round 1, three labels in:

- web-labeler.png: digits, one item at a time;
- web-labeler-grid.png: digits in the grid view (key g), a batch of 30 at once;
- web-labeler-text.png: the support tickets of tests/data/tickets.csv (`--text message`), one at a time.

    python docs/web_labeler_screenshot.py   # needs playwright and /usr/bin/chromium

The initial set is answered over HTTP with the data set's own labels, so that the model has
something to think with when the page is photographed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from labeling_helpers import Run  # noqa: E402

from alab.data import load_dataset  # noqa: E402

CONFIG = """samples = 20
[backend]
name = "mc_dropout"
weight_decay = 0.05
"""


def photograph(tmp: Path, data: list[str], y_pool: list[int], query_size: int, out: str, grid: bool = False) -> None:
    """Round 1 of a run on `data` with its first three queries answered, on the page (`grid`: the grid view), in docs/`out`."""
    (tmp / "c.toml").write_text(CONFIG)
    run = Run("run", "--config", f"{tmp}/c.toml", *data, "--oracle", "web", "--initial", "30", "--query-size", str(query_size),
              "--rounds", "5", "--out", f"{tmp}/{out}")  # fmt: skip
    try:
        url = run.url()
        base, token = url.split("/?token=")
        client = httpx.Client(base_url=base, headers={"X-Alab-Token": token}, timeout=60)
        for round_ in (0, 1):
            while (state := client.get("/api/state").json())["round"] != round_ or state["status"] != "labeling":
                time.sleep(0.5)
            for item in state["items"][: None if round_ == 0 else 3]:
                client.post("/api/label", json={"index": item["index"], "label": int(y_pool[item["index"]])})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1040, "height": 660 if not grid else 900}, device_scale_factor=1)
            page.goto(url + ("&view=grid" if grid else ""))
            if grid:
                page.wait_for_function("document.querySelectorAll('#gridbox.on .tile img').length > 0")
                page.wait_for_function("[...document.querySelectorAll('.tile img')].every((i) => i.complete)")
            elif "--text" in data:
                page.wait_for_selector(".passage")
            else:
                page.wait_for_selector(".figure img")
                page.wait_for_function("document.querySelector('.figure img').complete")
            page.screenshot(path=str(Path(__file__).with_name(out)))
            browser.close()
    finally:
        run.stop()


def main() -> None:
    digits = load_dataset("digits").y_pool.tolist()
    tickets = Path(__file__).resolve().parents[1] / "tests" / "data" / "tickets.csv"
    text = ["--dataset", f"csv:{tickets}", "--text", "message", "--target", "topic"]
    texts = load_dataset(f"csv:{tickets}", text="message", target="topic").y_pool.tolist()
    with tempfile.TemporaryDirectory() as tmp:
        photograph(Path(tmp), [], digits, 10, "web-labeler.png")
        photograph(Path(tmp), [], digits, 30, "web-labeler-grid.png", grid=True)
        photograph(Path(tmp), text, texts, 10, "web-labeler-text.png")


if __name__ == "__main__":
    main()
