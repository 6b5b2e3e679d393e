"""The page at / in a real browser (Playwright driving Debian's chromium) against a real server on
127.0.0.1: type a text, translate, read the n-best outputs, and check the attention heat-map is
drawn. A screenshot is kept in test-artifacts/web-page.png."""
import os
import shutil
from pathlib import Path

import pytest

from tests.system.serving_helpers import running_server, train_tiny_model, wait_ready
from transduce.inference import Translator

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = os.environ.get("TRANSDUCE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")



@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        message = "chromium not found: `make install` installs Debian's chromium package"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_page_translates_and_draws_the_attention_heat_map(browser, tmp_path):
    model_dir = train_tiny_model(tmp_path)
    source = "基于深度学习的图像识别方法"
    expected = Translator.from_dir(model_dir, device="cpu").translate_nbest([source], nbest=2, beam=3)[0]
    with running_server(model_dir) as url:
        wait_ready(url)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_function("document.getElementById('go').disabled === false")
        assert "ready" in page.inner_text("#status")
        page.fill("#source", source)
        page.fill("#beam", "3")
        page.fill("#nbest", "2")
        page.click("#go")
        page.wait_for_selector("ol.nbest li")
        items = page.locator("ol.nbest li .text").all_inner_texts()
        scores = [float(s) for s in page.locator("ol.nbest li .score").all_inner_texts()]
        assert items == [t.text for t in expected]
        assert scores == pytest.approx([t.score for t in expected], abs=1e-3)
        assert page.inner_text(".result .source") == source

        page.wait_for_selector("#heatmap-card:not(.hidden)")
        drawn = page.evaluate("""() => {
            const c = document.getElementById('heatmap');
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let tinted = 0;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i + 2] > 200 && data[i] < 200) tinted++;   // blue cells of the map
            }
            return {rows: Number(c.dataset.rows), cols: Number(c.dataset.cols), tinted, width: c.width};
        }""")
        assert drawn["rows"] == len(expected[0].tokens) + 1  # output tokens and the end
        assert drawn["cols"] == len(source)  # one column per source character
        assert drawn["tinted"] > 50, drawn

        page.locator("ol.nbest li").nth(1).click()  # another output redraws the map for it
        assert page.locator("ol.nbest li").nth(1).get_attribute("class") == "selected"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
        assert (ARTIFACTS / "web-page.png").stat().st_size > 10_000
        assert not errors, errors

        page.fill("#source", "x" * 3000)  # over the server's input limit: the page shows the error
        page.click("#go")
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "characters" in page.inner_text("#error")
