"""The web page in a real browser: headless Debian Chromium driven through chromedriver.
Fill the form with a demo customer, submit, and see xgboost's probability, the model and
the interaction id; a non-number gets a message next to its field. All of it under the page's
Content-Security-Policy (no inline script, no other origin), which also stops script injected
into the page."""
import os
import time
import pathlib
import shutil
import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from test_stack_e2e import CUSTOMERS, EXPECTED, FEATURES, feature_store, http, stack, wait_for_records, wait_in_sync  # noqa: F401

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        raise RuntimeError("chromium and chromedriver are required (scripts/test installs Debian's chromium and chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager try to download anything
    profile = tempfile.mkdtemp(prefix="chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1000,1100", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_fill_the_form_and_see_the_prediction(stack, browser, tmp_path):
    wait_in_sync(stack)
    browser.get(stack.url + "/")
    wait = WebDriverWait(browser, 15)
    wait.until(EC.presence_of_element_located((By.ID, "f-has_contract")))
    assert browser.find_element(By.ID, "endpoint").text == "my-mlops-prod-endpoint"
    for name, value in zip(FEATURES, CUSTOMERS[0][1:9]):
        field = browser.find_element(By.ID, "f-" + name)
        field.clear()
        field.send_keys(value)
    browser.find_element(By.ID, "submit").click()
    wait.until(EC.visibility_of_element_located((By.ID, "result")))
    browser.save_screenshot(str(pathlib.Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / "page-result.png"))

    shown = browser.find_element(By.ID, "probability").text
    assert shown == f"{EXPECTED[0] * 100:.1f} %", shown
    assert browser.find_element(By.ID, "variant").text == "my-mlops-prod-endpoint / AllTraffic"
    assert browser.find_element(By.ID, "model-version").text == "1"
    assert browser.find_element(By.ID, "sync").text == "Live model v1 is the latest approved version."
    assert browser.find_element(By.ID, "latency").text.endswith(" ms")
    interaction_id = browser.find_element(By.ID, "interaction-id").text
    found = wait_for_records(feature_store(stack), {interaction_id: pytest.approx(EXPECTED[0], abs=1e-6)})
    assert found[interaction_id]["source"] == "web"


def submit_age(stack, browser, value):
    """Opens the page, types `value` as the age, submits, and waits for the age's message."""
    browser.get(stack.url + "/")
    wait = WebDriverWait(browser, 15)
    wait.until(EC.presence_of_element_located((By.ID, "f-age")))
    browser.find_element(By.ID, "f-age").send_keys(value)
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: d.find_element(By.ID, "e-age").text != "")
    return wait


def test_a_bad_value_is_explained_next_to_its_field(stack, browser):
    submit_age(stack, browser, "forty")
    assert "number" in browser.find_element(By.ID, "e-age").text
    assert browser.find_element(By.ID, "f-age").get_attribute("aria-invalid") == "true"
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_the_page_is_served_with_its_protections(stack):
    for path in ("/", "/static/app.js", "/v1/model"):
        status, headers, _ = http("GET", stack.url + path)
        h = {k.lower(): v for k, v in headers.items()}
        assert status == 200, path
        csp = h["content-security-policy"]
        for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
            assert directive in csp, (path, csp)
        assert "unsafe-inline" not in csp and "*" not in csp, csp
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
    # No origin is allowed by default: a page elsewhere cannot read the API's answers.
    status, headers, _ = http("OPTIONS", stack.url + "/v1/predict", headers={
        "origin": "https://elsewhere.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in {k.lower() for k in headers}, headers


def test_injected_script_does_not_run(stack, browser):
    # A feature value that is markup: refused as a value, shown (as text) next to its field.
    wait = submit_age(stack, browser, '"><img src=x onerror="window.__pwned=1">')
    # Markup and script put into the page itself: the policy blocks every inline handler and
    # inline script, and reports it.
    browser.execute_script("""
        window.__violations = [];
        document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
        const holder = document.createElement("div");
        holder.innerHTML = '<img src="/nothing-here" onerror="window.__pwned = 2">';
        document.body.appendChild(holder);
        const script = document.createElement("script");
        script.textContent = "window.__pwned = 3";
        document.body.appendChild(script);
    """)
    deadline = time.time() + 5
    while time.time() < deadline and len(browser.execute_script("return window.__violations")) < 2:
        time.sleep(0.1)
    assert browser.execute_script("return window.__pwned") is None
    violations = browser.execute_script("return window.__violations")
    assert any(v.startswith("script-src") for v in violations), violations
    # The page's own script still works under the policy: it predicts.
    browser.get(stack.url + "/")
    wait.until(EC.presence_of_element_located((By.ID, "f-age")))
    for name, value in zip(FEATURES, CUSTOMERS[1][1:9]):
        browser.find_element(By.ID, "f-" + name).send_keys(value)
    browser.find_element(By.ID, "submit").click()
    wait.until(EC.visibility_of_element_located((By.ID, "result")))
    assert browser.find_element(By.ID, "probability").text == f"{EXPECTED[1] * 100:.1f} %"
