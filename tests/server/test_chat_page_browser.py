"""The chat page in a real browser: Debian's chromium and chromedriver (apt packages, no browser
download) driven by selenium, against `bitnet serve` on the bundled demo model.

Each reply the page shows is checked against the server's own non-streamed answer to the same
conversation with the same seed (same seed, same backend: same text), so the test sees that the
page sends the settings and the whole conversation, and puts the stream back together exactly.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest

from bitnet.core.api import demo_model_path
from tests.server.conftest import DEVICE, ServeProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install chromium "
                "chromium-driver; scripts/test.sh installs them)", allow_module_level=True)
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed: pip install selenium "
                                 "(scripts/test.sh installs it)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow  # two servers and a browser: ~15 s

MODEL = "demo"
KEY = "sk-page-test"
SETTINGS = {"temperature": 0.8, "top_p": 0.95}  # the page's defaults, sent with every request


def _serve(tmp_path_factory, *args: str) -> ServeProcess:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    return ServeProcess(["-m", str(demo_model_path()), "--device", DEVICE, "--model-name", MODEL,
                         "--log-level", "warning", *args], log).wait_ready()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = _serve(tmp_path_factory)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    s = _serve(tmp_path_factory, "--api-key", KEY)
    yield s
    s.stop()


@pytest.fixture
def browser():
    fonts = subprocess.run(["fc-list"], capture_output=True, text=True) if shutil.which("fc-list") \
        else None
    if fonts is not None and not fonts.stdout.strip():
        pytest.fail("no font is installed, and chromium's renderer crashes when text is typed "
                    "without one: apt-get install fonts-liberation (scripts/test.sh does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait(driver, what, timeout: float = 60):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: what(d))


def last_reply(driver) -> tuple[str, str]:
    """(state, text) of the newest assistant message."""
    return tuple(driver.execute_script(
        "const m = [...document.querySelectorAll('.msg.assistant')].pop();"
        "return m ? [m.dataset.state, m.querySelector('.text').textContent] : ['', ''];"))


def set_field(driver, field: str, value) -> None:
    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(str(value))


def send(driver, text: str, enter: bool = False) -> None:
    box = driver.find_element(By.ID, "prompt")
    box.send_keys(text)
    if enter:
        box.send_keys(Keys.ENTER)
    else:
        driver.find_element(By.ID, "send").click()


def server_reply(server: ServeProcess, messages: list[dict], seed: int, max_tokens: int,
                 key: str | None = None) -> str:
    """The server's own (non-streamed) answer to what the page sends."""
    body = {"model": MODEL, "messages": messages, "seed": seed, "max_tokens": max_tokens,
            **SETTINGS}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def ready(driver) -> bool:
    return (driver.find_element(By.ID, "send").is_enabled()
            and not driver.find_element(By.ID, "stop").is_enabled())


def severe_console_messages(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_chat_streams_keeps_the_conversation_and_stops_midway(server, browser) -> None:
    driver = browser
    driver.get(server.url + "/")
    health = httpx.get(server.url + "/health").json()
    info = f"model {MODEL} · backend {health['backend']} · device {health['device']}"
    wait(driver, lambda d: d.find_element(By.ID, "server-info").text == info)
    wait(driver, ready)

    # two turns of one conversation, each checked against the server's answer
    first, second = [{"role": "user", "content": "Good morning."}], "And then?"
    seed = next(s for s in range(16) if server_reply(server, first, s, 40))  # a non-empty reply
    set_field(driver, "seed", seed)
    set_field(driver, "max_tokens", 40)
    send(driver, first[0]["content"])
    wait(driver, lambda d: last_reply(d)[1] != "")  # streamed text appears
    wait(driver, lambda d: last_reply(d)[0] == "done")
    reply1 = last_reply(driver)[1]
    assert reply1 == server_reply(server, first, seed, 40)
    assert "tokens/s" in driver.find_element(By.ID, "stats").text
    turns = first + [{"role": "assistant", "content": reply1}, {"role": "user", "content": second}]
    send(driver, second, enter=True)
    wait(driver, lambda d: last_reply(d)[0] == "done")
    assert last_reply(driver)[1] == server_reply(server, turns, seed, 40)
    assert len(driver.find_elements(By.CSS_SELECTOR, ".msg")) == 4

    # a new chat, a long reply, Stop midway: the stream is slowed (Chrome's network emulation)
    # so that the reply is still arriving when Stop is pressed
    driver.find_element(By.ID, "new-chat").click()
    assert driver.find_elements(By.CSS_SELECTOR, ".msg") == []
    story = [{"role": "user", "content": "Tell me a long story."}]
    long = ((server_reply(server, story, s, 4000), s) for s in range(16))
    full, seed = next((r for r in long if len(r[0]) > 240), ("", None))
    assert seed is not None, "no seed in 0..15 gives the demo model a long reply to stop"
    set_field(driver, "seed", seed)
    set_field(driver, "max_tokens", 4000)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": 1000, "uploadThroughput": -1})
    send(driver, story[0]["content"])
    wait(driver, lambda d: last_reply(d)[1] != "")
    driver.find_element(By.ID, "stop").click()
    wait(driver, lambda d: last_reply(d)[0] == "stopped", timeout=10)
    partial = last_reply(driver)[1]
    time.sleep(2)  # longer than the emulated network's gap between deliveries
    assert last_reply(driver) == ("stopped", partial)  # the text stopped growing
    assert partial and full.startswith(partial) and len(partial) < len(full)
    assert ready(driver)
    assert driver.find_element(By.ID, "stats").text.startswith("stopped: ")
    driver.execute_cdp_cmd("Network.disable", {})

    # the page is ready again, and the stopped reply is part of the conversation
    set_field(driver, "max_tokens", 24)
    send(driver, "Go on.")
    wait(driver, lambda d: last_reply(d)[0] == "done")
    turns = story + [{"role": "assistant", "content": partial},
                     {"role": "user", "content": "Go on."}]
    assert last_reply(driver)[1] == server_reply(server, turns, seed, 24)
    assert severe_console_messages(driver) == []


def test_the_page_works_with_an_api_key_once_it_is_entered(keyed_server, browser) -> None:
    driver = browser
    driver.get(keyed_server.url + "/")  # the page itself needs no key
    wait(driver, lambda d: "needs an API key" in d.find_element(By.ID, "notice").text)

    send(driver, "Hello.")  # without the key: the server's 401, and the text is kept to resend
    wait(driver, lambda d: last_reply(d)[0] == "error")
    assert "invalid or missing API key" in driver.find_element(By.ID, "notice").text
    assert driver.find_element(By.ID, "prompt").get_attribute("value") == "Hello."
    assert ready(driver)

    key = driver.find_element(By.ID, "api-key")
    key.send_keys(KEY, Keys.TAB)  # `change`: stored, and /v1/models asked again with it
    wait(driver, lambda d: d.find_element(By.ID, "notice").text == "")
    set_field(driver, "seed", 3)
    set_field(driver, "max_tokens", 16)
    driver.find_element(By.ID, "send").click()
    wait(driver, lambda d: last_reply(d)[0] == "done")
    hello = [{"role": "user", "content": "Hello."}]
    assert last_reply(driver)[1] == server_reply(keyed_server, hello, 3, 16, key=KEY)

    driver.refresh()  # the key and the settings are kept in the browser
    wait(driver, lambda d: "backend" in d.find_element(By.ID, "server-info").text)
    wait(driver, ready)
    assert driver.find_element(By.ID, "api-key").get_attribute("value") == KEY
    assert driver.find_element(By.ID, "seed").get_attribute("value") == "3"
    assert driver.find_element(By.ID, "notice").text == ""
    unexpected = [m for m in severe_console_messages(driver) if "401" not in m]
    assert unexpected == []
