"""Drive a real headless Chromium through one human-evaluation form and ingest the JSON it saves.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and ``selenium`` (PyPI). Without them the test is
skipped locally, but FAILS when CI=true, so CI cannot silently lose this check.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from lverse_core.evaluation import human_eval as H

from test_human_eval import _study

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")


def _browser(download_dir: Path):
    missing = [name for name, ok in (("chromium", CHROMIUM), ("chromedriver (chromium-driver)", DRIVER)) if not ok]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        msg = (f"browser test needs {', '.join(missing)}: apt-get install -y chromium chromium-driver; "
               f"pip install selenium")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


@pytest.mark.browser
def test_a_rater_fills_one_form_in_chromium(tmp_path):
    from selenium.webdriver.common.by import By

    # Every image of the pool on one form, so the caption holding markup is on it.
    cfg, study = _study(tmp_path, n=18, form_size=18, raters=1, pred_markup=True)
    form = study["forms"][0]
    page = H.study_dir(cfg) / "forms" / f"{form['form_id']}.html"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _browser(downloads)
    try:
        driver.get(page.as_uri())
        # Escaped captions show as text, not markup.
        texts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".caption")]
        assert len(texts) == 36
        assert '<script>alert("x")</script> & <b>bold</b>' in texts
        assert not driver.find_elements(By.CSS_SELECTOR, ".caption b, .caption script")
        # Saving before answering everything is refused with a message, and nothing is downloaded.
        driver.find_element(By.ID, "save").click()
        assert "Please answer" in driver.find_element(By.ID, "status").text
        choices = (["first", "second", "both"] * 6)[:len(form["sets"])]
        for s, c in zip(form["sets"], choices):
            driver.find_element(By.CSS_SELECTOR, f"input[name='{s['set_id']}'][value='{c}']").click()
        driver.find_element(By.ID, "rater").send_keys("browser test")
        driver.find_element(By.ID, "save").click()
        target = downloads / f"answers_{form['form_id']}.json"
        deadline = time.monotonic() + 20
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert target.exists(), f"no download in {downloads}: {list(downloads.iterdir())}"
        assert "Saved" in driver.find_element(By.ID, "status").text
    finally:
        driver.quit()
    saved = json.loads(target.read_text())
    assert saved["form_id"] == form["form_id"] and saved["study"] == study["study"]
    assert saved["rater"] == "browser test"
    assert [a["choice"] for a in saved["answers"]] == choices
    assert H.ingest_answers(cfg, [target])["ingested"] == [target.name]
    assert len(H.unblind(cfg)) == 18


def test_missing_browser_fails_on_ci_and_skips_locally(monkeypatch, tmp_path):
    import sys

    mod = sys.modules[__name__]
    monkeypatch.setattr(mod, "CHROMIUM", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium chromium-driver"):
        _browser(tmp_path)
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        _browser(tmp_path)
