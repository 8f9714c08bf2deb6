"""Takes docs/web-labeler.png: a digits run on the web labeler, round 1, three labels in.

    python docs/web_labeler_screenshot.py   # needs the web extra, playwright and /usr/bin/chromium

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


def main() -> None:
    y_pool = load_dataset("digits").y_pool
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.toml").write_text(CONFIG)
        run = Run("run", "--config", f"{tmp}/c.toml", "--oracle", "web", "--initial", "30", "--query-size", "10",
                  "--rounds", "5", "--out", f"{tmp}/run")  # fmt: skip
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
                page = browser.new_page(viewport={"width": 1040, "height": 660}, device_scale_factor=1)
                page.goto(url)
                page.wait_for_selector(".figure img")
                page.wait_for_function("document.querySelector('.figure img').complete")
                page.screenshot(path=str(Path(__file__).with_name("web-labeler.png")))
                browser.close()
        finally:
            run.stop()


if __name__ == "__main__":
    main()
