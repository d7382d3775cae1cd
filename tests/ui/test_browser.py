"""The operator page in a real headless browser (Debian's chromium, via chromedriver).

A real gateway (uvicorn, SQLite file, dispatcher on) sends to the import_batch
simulator, which is down: with one attempt allowed the profile ends `dead`. The
simulator comes back; the browser signs in through the form, finds the dead
letter, clicks Replay, and watches, without reloading, the dead letter leave the
list and the profile's import_batch delivery reach `confirmed`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from gateway.app import create_app
from gateway.config import Settings
from gateway.simulators.import_batch import create_import_batch_app
from tests.conftest import AUTH, TOKEN
from tests.servers import serve
from tests.tokens import entry

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SIM_TOKEN = "import-batch-token"
WAIT = 30.0


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    for tool in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(tool), f"{tool} missing: apt-get install chromium chromium-driver"
    # Both paths are given, so Selenium Manager has nothing to look for; offline
    # makes sure it never tries to download a browser or a driver.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: CI runs as root, where chromium refuses its sandbox.
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1400",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def import_batch() -> Iterator[str]:
    with serve(create_import_batch_app(token=SIM_TOKEN)) as url:
        yield url


@pytest.fixture
def gateway(tmp_path: Path, import_batch: str) -> Iterator[str]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        api_tokens=entry("crm", TOKEN),
        import_batch_url=import_batch + "/api",
        import_batch_token=SIM_TOKEN,
        max_attempts=1,  # the first failure makes a dead letter
        breaker_failures=0,  # and no circuit holds it back
        poll_interval=0.1,
        batch_linger=0.0,
        backend_timeout=5.0,
    )
    with serve(create_app(settings)) as url:
        yield url


def wait_for_state(base: str, external_id: str, state: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/v1/profiles/{external_id}", headers=AUTH)
        if r.status_code == 200 and r.json()["backends"]["import_batch"]["state"] == state:
            return
        time.sleep(0.1)
    raise AssertionError(f"{external_id} never became {state}")


def text_of(driver: WebDriver, css: str) -> str:
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""  # redrawn between find and read: look again


def test_replay_a_dead_letter_by_clicking(
    browser: WebDriver, gateway: str, import_batch: str, tmp_path: Path
) -> None:
    httpx.put(f"{import_batch}/_sim/faults", json={"outage": True}).raise_for_status()
    written = httpx.post(
        f"{gateway}/v1/profiles",
        headers=AUTH,
        json={"external_id": "cust-42", "email": "jane@example.com", "targets": ["import_batch"]},
    )
    assert written.status_code == 202
    wait_for_state(gateway, "cust-42", "dead")
    httpx.put(f"{import_batch}/_sim/faults", json={"outage": False}).raise_for_status()

    wait = WebDriverWait(browser, WAIT, poll_frequency=0.1)
    browser.get(f"{gateway}/ui")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").submit()

    backend_row = '#backends tr[data-backend="import_batch"]'
    wait.until(lambda d: text_of(d, f"{backend_row} td.dead") == "1")
    assert text_of(browser, f"{backend_row} td.circuit") == "closed"
    wait.until(lambda d: "updated" in text_of(d, "#updated"))
    dead_row = '#deliveries tr[data-delivery-id="1"]'
    assert "cust-42" in text_of(browser, dead_row)
    assert "503" in text_of(browser, dead_row)  # the simulator's outage, as the reason

    # The profile's state per backend, before the replay.
    browser.find_element(By.ID, "search-id").send_keys("cust-42")
    browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    state_cell = '#profile-backends tr[data-backend="import_batch"] td.state'
    wait.until(lambda d: text_of(d, state_cell) == "dead")

    browser.find_element(By.CSS_SELECTOR, f"{dead_row} button.replay").click()
    wait.until(lambda d: "Requeued 1 delivery." in text_of(d, "#notice"))
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, dead_row))
    assert browser.find_element(By.ID, "deliveries-empty").is_displayed()
    # No click or reload from here: the page's own refresh shows the delivery land.
    wait.until(lambda d: text_of(d, state_cell) == "confirmed")
    wait.until(lambda d: text_of(d, f"{backend_row} td.dead") == "0")
    attempts = '#profile-backends tr[data-backend="import_batch"] td.attempts'
    assert text_of(browser, attempts) == "1"

    # The mapping in force, read-only: the built-in one here, opened to read.
    assert "built-in mapping" in text_of(browser, "#mapping-source")
    browser.find_element(By.CSS_SELECTOR, "#mapping-title ~ details summary").click()
    wait.until(lambda d: '"matching": "email"' in text_of(d, "#mapping"))

    shot = tmp_path / "ui.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing the page loaded came from anywhere but the gateway.
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert set(origins) <= {gateway}
