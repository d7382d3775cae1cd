"""`/docs` in a real headless browser: Swagger UI renders the gateway's OpenAPI
document from the gateway's own files, and nothing leaves 127.0.0.1.

Chromium's performance log lists every request the page made (its DevTools
`Network.requestWillBeSent` events); its console log would name any resource
the Content-Security-Policy refused. The screenshot is docs/api-docs.png.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import SHOP_TOKEN
from tests.servers import serve
from tests.tokens import entry

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "api-docs.png"
WAIT = 30.0


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    for tool in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(tool), f"{tool} missing: apt-get install chromium chromium-driver"
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        # No background calls of Chromium's own (updates, safe browsing, ...):
        # the requests left in the log are the page's.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        # A plain writer's token: the docs, like /openapi.json, need no scope.
        api_tokens=entry("shop", SHOP_TOKEN, ""),
        dispatcher_enabled=False,
    )
    with serve(create_app(settings)) as url:
        yield url


def log_of(driver: WebDriver, kind: str) -> list[dict[str, Any]]:
    """Chromium's `kind` log since the last read (reading empties it)."""
    found: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]
    return found


def requested_urls(driver: WebDriver) -> list[str]:
    urls = []
    for entry_ in log_of(driver, "performance"):
        message = json.loads(entry_["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_the_docs_page_renders_the_api_from_the_gateway_alone(
    browser: WebDriver, gateway: str
) -> None:
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.1)
    browser.get(f"{gateway}/docs")
    # No session yet: the sign-in form (a 401, which the console reports), as for
    # the operator page. Both logs are read, and so emptied, here.
    urls = requested_urls(browser)
    assert "401" in " ".join(e["message"] for e in log_of(browser, "browser"))
    browser.find_element(By.ID, "token").send_keys(SHOP_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").submit()

    wait.until(lambda d: "/v1/profiles/batch" in d.find_element(By.ID, "swagger-ui").text)
    page = browser.find_element(By.ID, "swagger-ui").text
    assert "Profile gateway" in page
    operations = [
        op.text.split("\n")[:2] for op in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary")
    ]
    assert ["POST", "/v1/profiles"] in operations
    assert ["GET", "/v1/requests/{request_id}"] in operations
    assert "Write 1 to 1000 profiles" in page
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))

    # Open one operation: its parameters and answers render from the schema.
    browser.find_element(By.CSS_SELECTOR, "#operations-default-writeProfile button").click()
    wait.until(lambda d: "Idempotency-Key" in d.find_element(By.ID, "swagger-ui").text)

    urls += requested_urls(browser)
    assert f"{gateway}/docs/openapi.json" in urls
    assert f"{gateway}/docs/assets/swagger-ui-bundle.js" in urls
    elsewhere = [
        u for u in urls if not u.startswith("data:") and urlsplit(u).hostname != "127.0.0.1"
    ]
    assert elsewhere == []
    # Nothing was refused by the Content-Security-Policy, and nothing failed.
    problems = [e["message"] for e in log_of(browser, "browser") if e["level"] == "SEVERE"]
    assert problems == []
