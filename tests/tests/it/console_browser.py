"""Drives the edge's web console (/ui) in headless Chromium through Selenium, against the real
edge and reasoner that `console.rs` started, and saves a screenshot of each page.

Prints one JSON line per passed check ({"check": name}) and ends with {"done": [...]}; any
failure raises, so the process exits non-zero with the reason. Selenium is pointed at Debian's
chromium and chromedriver explicitly, so it never tries to download a driver.
"""

import argparse
import json
import os

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

MODES = ["full", "no_reflection", "no_detector", "pure"]
# Every mode, then full again with pseudonymization ticked.
TURNS = [(mode, False) for mode in MODES] + [("full", True)]


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--shots", required=True)
    parser.add_argument("--photo", required=True, help="a reference photo to register")
    parser.add_argument("--query", required=True, help="a photo to ask about")
    parser.add_argument("--not-image", required=True, help="a file that is not an image")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    return parser.parse_args()


class Console:
    def __init__(self, args):
        options = webdriver.ChromeOptions()
        options.binary_location = args.chromium
        for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--hide-scrollbars"]:
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)
        self.viewport(1280, 800)
        self.args = args
        self.checks = []
        # The tiny model on two CPU cores answers a full turn in tens of seconds.
        self.wait = WebDriverWait(self.driver, 300)

    def viewport(self, width, height):
        """Sizes the page's viewport itself (the window's outer size includes its frame)."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500})

    def check(self, name):
        self.checks.append(name)
        print(json.dumps({"check": name}), flush=True)

    def shot(self, name):
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(os.path.join(self.args.shots, name + ".png"))

    def by_id(self, element_id):
        return self.driver.find_element(By.ID, element_id)

    def visible(self, element_id):
        return self.wait.until(EC.visibility_of_element_located((By.ID, element_id)))

    def open(self, page):
        """A full load of the page: a hash change alone would re-render lists asynchronously
        under the test's hands."""
        self.driver.get(self.args.base + "/ui/#" + page)
        self.driver.refresh()

    def notice(self):
        self.wait.until(lambda d: d.find_element(By.ID, "notice").is_displayed())
        return self.by_id("notice").text

    def type_into(self, element_id, text):
        field = self.by_id(element_id)
        field.clear()
        field.send_keys(text)
        return field


def key_prompt(console):
    console.open("concepts")
    console.visible("key-input")
    console.shot("key-prompt")
    console.check("the key prompt when auth is on")
    # Keyboard only: type the key and press Enter.
    console.by_id("key-input").send_keys(console.args.key, Keys.ENTER)
    console.visible("register-id")
    stored = console.driver.execute_script("return sessionStorage.getItem('slc-api-key')")
    assert stored == console.args.key, stored
    assert console.args.key not in console.driver.current_url
    console.check("the key is kept in sessionStorage, not the URL")


def register(console, concept_id, description, photo):
    console.type_into("register-description", description)
    console.by_id("register-images").send_keys(photo)
    # Submitted from the keyboard: Enter in the id field.
    console.type_into("register-id", concept_id).send_keys(Keys.ENTER)


def id_rule(console):
    register(console, "zz", "A cup without its id.", console.args.photo)
    message = console.notice()
    assert "must name the concept as <zz>" in message, message
    assert not console.driver.find_elements(By.CSS_SELECTOR, "li[data-concept='zz']")
    console.check("the <id> rule is checked before submitting")
    console.driver.execute_script("document.getElementById('register-form').reset()")


def invalid_upload(console):
    register(console, "notaphoto", "<notaphoto> is a text file.", console.args.not_image)
    message = console.notice()
    assert "invalid_image" in message and "not an image" in message, message
    console.shot("invalid-upload")
    console.check("an invalid upload shows the API's error message")
    console.driver.execute_script("document.getElementById('register-form').reset()")


def register_and_list(console):
    register(console, "bo", "<bo> is a Shiba Inu with a red collar.", console.args.photo)
    cover = "li[data-concept='bo'] img.cover"
    console.wait.until(lambda d: d.execute_script(
        "const img = document.querySelector(arguments[0]); return !!img && img.complete && img.naturalWidth > 0;",
        cover))
    console.check("registering a concept from a file input")
    console.check("the concept is listed with its thumbnail")
    text = console.driver.find_element(By.CSS_SELECTOR, "li[data-concept='bo']").text
    assert "<bo>" in text, text
    badge = console.driver.find_element(By.CSS_SELECTOR, "li[data-concept='bo'] .badge").text
    assert badge.startswith("bo · "), badge
    console.check("the concept shows its Eq. 1 adapter and similarity")
    console.shot("concepts")


def edit_concept(console, photo):
    item = "li[data-concept='bo']"
    description = console.by_id("description-bo")
    description.clear()
    description.send_keys("<bo> wears a red collar.")
    console.driver.find_element(By.XPATH, "//li[@data-concept='bo']//button[text()='Save description']").click()
    console.wait.until(lambda d: "Saved the description of <bo>" in d.find_element(By.ID, "notice").text)
    console.open("concepts")
    console.wait.until(lambda d: d.find_elements(By.ID, "description-bo")
                       and d.find_element(By.ID, "description-bo").get_attribute("value") == "<bo> wears a red collar.")
    console.by_id("add-bo").send_keys(photo)
    console.wait.until(lambda d: "2 photos" in d.find_element(By.CSS_SELECTOR, item).text)
    console.driver.find_element(By.CSS_SELECTOR, "button[aria-label='Remove photo 2 of <bo>']").click()
    console.wait.until(lambda d: "1 photo ·" in d.find_element(By.CSS_SELECTOR, item).text)
    console.check("editing a description, adding and removing a photo")


def ask_each_mode(console):
    console.open("ask")
    console.visible("ask-question")
    console.by_id("ask-image").send_keys(console.args.query)
    console.wait.until(lambda d: d.find_element(By.ID, "ask-preview").is_displayed())
    # Keyboard: Space ticks the checkbox, Enter on the focused button asks.
    console.wait.until(EC.element_to_be_clickable((By.ID, "ask-concept-bo"))).send_keys(Keys.SPACE)
    assert console.by_id("ask-concept-bo").is_selected()
    console.type_into("ask-question", "Where is <bo> in this photo?")
    for mode, pseudonymize in TURNS:
        if console.by_id("ask-pseudonymize").is_selected() != pseudonymize:
            console.by_id("ask-pseudonymize").send_keys(Keys.SPACE)
        Select(console.by_id("ask-mode")).select_by_value(mode)
        # The previous turn re-enables the button only after its last event.
        turn = str(int(console.by_id("answer").get_attribute("data-turn") or 0) + 1)
        console.wait.until(EC.element_to_be_clickable((By.ID, "ask-submit"))).send_keys(Keys.ENTER)
        console.wait.until(lambda d: d.find_element(By.ID, "answer").get_attribute("data-turn") == turn
                           and d.find_element(By.ID, "ask-submit").is_enabled())
        state = console.by_id("ask-state").text
        assert state.startswith("Done"), state + " / " + console.by_id("notice").text
        events = console.by_id("answer").get_attribute("data-events").split(",")
        # The tiny model's answer may be empty, so a delta is not guaranteed; if any came, before done.
        assert events[-1] == "done", events
        assert "delta" not in events or events.index("delta") < events.index("done"), events
        assert ("verification" in events) == (mode in ("full", "no_reflection")), (mode, events)
        assert ("detection" in events) == (mode in ("full", "no_reflection")), (mode, events)
        trace = console.visible("trace").text
        headings = [h.text for h in console.driver.find_elements(By.CSS_SELECTOR, "#trace-body h4")]
        assert "Mode\n" + mode in trace or "Mode " + mode in trace, trace
        assert ("Cues from the edge" in headings) == (mode in ("full", "no_reflection")), (mode, headings)
        assert ("Identities" in headings) == (mode != "pure"), (mode, headings)
        assert "Timings" in headings and "Large-model calls" in trace, (headings, trace)
        if not pseudonymize:
            console.shot("ask-" + mode)
    console.check("asking a question and seeing streamed text arrive before done")
    console.check("the trace rendered for each mode")
    console.check("the ask flow works from the keyboard")


def status(console):
    console.open("status")
    console.wait.until(lambda d: "ready" in d.find_element(By.ID, "status-list").text)
    text = console.by_id("status-list").text
    assert "Vision cache" in text and "untied" in text, text
    console.shot("status")
    console.check("the status page shows readiness, models and caches")


def phone_width(console):
    console.viewport(375, 800)
    for page in ["concepts", "ask"]:
        console.open(page)
        console.wait.until(lambda d: d.find_element(By.ID, "page-" + page).is_displayed())
        width = console.driver.execute_script("return document.documentElement.scrollWidth")
        viewport = console.driver.execute_script("return window.innerWidth")
        assert width <= viewport, (page, width, viewport)
        console.shot(page + "-375px")
    console.viewport(1280, 800)
    console.check("readable at 375 px width")


def delete(console):
    console.open("concepts")
    console.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "li[data-concept='bo'] img.cover"))
    selector = "[data-delete='bo']"
    console.wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, selector))).send_keys(Keys.ENTER)
    console.wait.until(lambda d: "Really" in d.find_element(By.CSS_SELECTOR, selector).text)
    console.driver.find_element(By.CSS_SELECTOR, selector).send_keys(Keys.ENTER)
    console.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "li[data-concept='bo']"))
    assert "Deleted <bo>" in console.notice()
    console.shot("deleted")
    console.check("deleting a concept")


def main():
    args = parse_args()
    os.makedirs(args.shots, exist_ok=True)
    console = Console(args)
    try:
        key_prompt(console)
        id_rule(console)
        invalid_upload(console)
        register_and_list(console)
        edit_concept(console, args.query)
        ask_each_mode(console)
        status(console)
        phone_width(console)
        delete(console)
        logs = console.driver.get_log("browser")
        violations = [entry["message"] for entry in logs if "Content Security Policy" in entry["message"]]
        assert not violations, violations
        console.check("no Content-Security-Policy violations")
    except Exception:
        console.shot("failure")
        raise
    finally:
        console.driver.quit()
    print(json.dumps({"done": console.checks}), flush=True)


if __name__ == "__main__":
    main()
