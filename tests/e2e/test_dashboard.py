"""The web dashboard in a real browser (Debian's Chromium, driven by Playwright) against a
real ``dockyard serve``: sign in, create an app, deploy it by dropping an archive on the
page and watch its build log arrive live, open it through the router, set a variable,
scale, reset the cache, sign out; another user does not see the app. axe-core checks every
page; a screenshot of each is saved under tests/e2e/screenshots/ for review.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, ServerProcess, server_process
from tests.e2e.deployer import Deployer
from tests.helpers import tar_gz_from_files, wait_for

# Debian's Chromium (scripts/setup.sh installs it); DOCKYARD_CHROMIUM names another build.
CHROMIUM = Path(os.environ.get("DOCKYARD_CHROMIUM", "/usr/bin/chromium"))
AXE = REPO / "tests" / "e2e" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "tests" / "e2e" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
LIVE = 120_000  # ms: a deployment's build, boot check and route switch
STEP = 15_000  # ms: a page or a form's answer

SERVER = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from the dashboard, " + os.environ.get("GREETING", "no greeting")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print("visited", self.path, flush=True)

print("booting on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; scripts/setup.sh does)"
    if not AXE.exists():
        return f"{AXE} is missing (scripts/setup.sh installs axe-core with npm)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("DOCKYARD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests are required (DOCKYARD_REQUIRE_BROWSER=1) but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = server_process(tmp_path_factory.mktemp("dashboard"), DOCKYARD_BOOT_TIMEOUT="20")
    # The API names itself by another host than the one the browser uses (as behind a
    # proxy): the pages must still talk to their own origin only.
    process.env["DOCKYARD_PUBLIC_URL"] = process.url.replace("127.0.0.1", "localhost")
    process.start()
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    try:
        yield process
    finally:
        process.stop()
        process.remove_data()


class Visit:
    """One browser context (one person's browser): pages, with the checks every page gets."""

    def __init__(self, browser: Any, server: ServerProcess, who: str, **context: Any) -> None:
        self.server = server
        self.who = who
        self.context = browser.new_context(base_url=server.url, **context)
        self.context.set_default_timeout(STEP)
        self.page = self.context.new_page()
        # Anything the Content-Security-Policy blocked would show up here: the dashboard
        # must work under its own policy.
        self.csp_violations: list[str] = []
        self.page.on(
            "console",
            lambda message: (
                self.csp_violations.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )

    def close(self) -> None:
        self.context.close()

    def check(self, name: str) -> None:
        """axe-core finds no serious or critical issue on the page; then a screenshot."""
        self.page.evaluate(AXE.read_text())
        result = self.page.evaluate(
            "() => axe.run(document, {resultTypes: ['violations']})"
            ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' '))})))"
        )
        serious = [v for v in result if v["impact"] in ("serious", "critical")]
        assert serious == [], f"accessibility violations on {name}: {serious}"
        self.page.screenshot(path=str(SCREENSHOTS / f"{self.who}-{name}.png"), full_page=True)
        assert self.csp_violations == []

    def sign_in(self, token: str) -> None:
        self.page.goto("/")
        assert self.page.url.endswith("/signin")
        self.check("signin")
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r"/$"))


def drop(page: Any, name: str, content: bytes) -> None:
    """Drop a file on the page's deploy zone, as a drag and drop from the desktop does."""
    transfer = page.evaluate_handle(
        """([name, b64]) => {
             const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
             const transfer = new DataTransfer();
             transfer.items.add(new File([bytes], name, {type: 'application/gzip'}));
             return transfer;
           }""",
        [name, base64.b64encode(content).decode()],
    )
    page.dispatch_event("#deploy-form", "drop", {"dataTransfer": transfer})


@pytest.fixture(scope="module")
def users(server: ServerProcess) -> dict[str, str]:
    return {name: server.create_user(name) for name in ("erin", "frank", "gwen")}


def test_sign_in_create_deploy_live_open_set_scale_reset_sign_out(
    browser: Any, server: ServerProcess, users: dict[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    erin = Visit(browser, server, "erin")
    page = erin.page
    try:
        erin.sign_in(users["erin"])
        expect(page.locator("#no-apps")).to_be_visible()
        erin.check("apps-empty")

        # A bad name is refused in words, on the page.
        page.get_by_label("Name").fill("Not_A_Name")
        page.get_by_role("button", name="Create app").click()
        expect(page.get_by_role("alert")).to_contain_text("name")
        page.get_by_label("Name").fill("harbour")
        page.get_by_role("button", name="Create app").click()
        page.wait_for_url(re.compile(r"/apps/harbour\?done=created$"))
        expect(page.get_by_role("status").first).to_contain_text("The app is created")
        erin.check("app-new")

        # What is not a gzip archive is refused, in words, before any deployment starts.
        drop(page, "notes.txt", b"just text")
        expect(page.locator("#deploy-message")).to_contain_text(
            "notes.txt is not a .tar.gz archive"
        )
        drop(page, "fake.tar.gz", b"not gzip at all")
        expect(page.locator("#deploy-message")).to_contain_text("The upload is not a gzip archive")
        assert page.url.endswith("/apps/harbour?done=created")

        # Deploy by dropping the archive on the page; the progress bar reports the upload.
        archive = tar_gz_from_files(
            {"Procfile": "web: python3 server.py\n", "server.py": SERVER}, root="harbour"
        )
        progress: list[str] = []
        page.expose_function("recordProgress", lambda value: progress.append(value))
        page.evaluate(
            """() => new MutationObserver(() => window.recordProgress(
                   document.getElementById('upload-progress').getAttribute('value')))
                 .observe(document.getElementById('upload-progress'), {attributes: true})"""
        )
        frames: list[str] = []
        page.on(
            "websocket",
            lambda socket: socket.on("framereceived", lambda frame: frames.append(str(frame))),
        )
        drop(page, "harbour.tar.gz", archive)
        page.wait_for_url(re.compile(r"/apps/harbour/deployments/[0-9a-f-]+$"))
        assert progress and progress[-1] == "100", progress

        # The log and the status arrive through the deployment stream, without a reload.
        status = page.locator("#deployment-status")
        expect(status).to_have_text("success", timeout=LIVE)
        expect(page.locator("#build-log")).to_contain_text("Fetching source code")
        expect(page.locator("#build-log")).to_contain_text("Your app is up and running")
        assert any('"status": "success"' in frame for frame in frames), frames[-5:]
        assert any('"type": "log"' in frame for frame in frames)
        expect(page.locator("#stream-state")).to_contain_text("The deployment ended: success")
        expect(page.locator("#deployment-duration")).to_have_text(re.compile(r"^\d+ s$"))
        erin.check("deployment")

        # The app answers at its URL, through the router.
        page.locator("#app-url").click()
        expect(page.locator("body")).to_contain_text("hello from the dashboard, no greeting")
        page.screenshot(path=str(SCREENSHOTS / "erin-app-served.png"))
        page.goto("/apps/harbour")

        # The app page: its live logs show the visit just made; the deployment is listed.
        expect(page.locator("#app-logs")).to_contain_text("visited /", timeout=LIVE)
        expect(page.locator("#deployments")).to_contain_text("success")
        expect(page.locator("#durations-chart")).to_be_visible()
        expect(page.locator("#memory-chart")).to_contain_text("512 MB")

        # A variable, added then revealed and edited.
        page.get_by_label("Name", exact=True).fill("GREETING")
        page.get_by_label("Value", exact=True).fill("ahoy")
        page.get_by_role("button", name="Add variable").click()
        expect(page.get_by_role("status").first).to_contain_text("The variable is saved")
        value = page.get_by_label("Value of GREETING")
        expect(value).to_be_hidden()
        page.get_by_text("Reveal and edit").click()
        expect(value).to_have_value("ahoy")
        value.fill("ahoy there")
        page.get_by_role("button", name="Save GREETING").click()
        expect(page.get_by_role("status").first).to_contain_text("The variable is saved")
        erin.check("app-deployed")

        # Scale web to two instances: both run, and the router sends visitors to both.
        page.get_by_role("button", name="Scale web up to 2").click()
        expect(page.get_by_role("status").first).to_contain_text("Scaling requested")
        expect(page.locator('#formation tr[data-type="web"] .amount')).to_have_text("2")
        deployer = Deployer(server=server, token=users["erin"])
        with deployer.client() as api:
            wait_for(
                lambda: (
                    [c["state"] for c in api.get("/v1/apps/harbour/ps").json()["containers"]]
                    == ["running", "running"]
                ),
                timeout=60,
                what="two running web instances",
            )
            # The page's forms went through the API's services: the API sees the change.
            variables = api.get("/v1/apps/harbour/variables").json()["variables"]
            assert [(v["name"], v["value"]) for v in variables] == [("GREETING", "ahoy there")]
        page.reload()
        expect(page.locator("#instances li")).to_have_count(2)
        expect(page.locator("#memory-chart")).to_contain_text("1024 MB")

        # Reset the build cache.
        page.get_by_role("button", name="Reset the build cache").click()
        expect(page.get_by_role("status").first).to_contain_text("The build cache is reset")
        erin.check("app-scaled")

        # Sign out: the session ends on the server too, not only in this browser.
        session = next(c for c in erin.context.cookies() if c["name"] == "dockyard_session")
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r"/signin$"))
        stale = httpx.get(
            f"{server.url}/apps/harbour",
            cookies={"dockyard_session": session["value"]},
            follow_redirects=False,
        )
        assert stale.status_code == 303 and stale.headers["location"] == "/signin"
        page.goto("/apps/harbour")
        assert page.url.endswith("/signin")
    finally:
        erin.close()

    # Another user sees none of it.
    frank = Visit(browser, server, "frank")
    try:
        frank.sign_in(users["frank"])
        expect(frank.page.locator("#no-apps")).to_be_visible()
        expect(frank.page.locator("main")).not_to_contain_text("harbour")
        response = frank.page.goto("/apps/harbour")
        assert response is not None and response.status == 404
        expect(frank.page.get_by_role("alert")).to_contain_text("No app of that name is yours")
        frank.check("someone-elses-app")
        # The browser enforces the policy: a script slipped into the page does not run.
        with frank.page.expect_console_message(lambda m: "Content Security Policy" in m.text):
            frank.page.evaluate(
                """() => { const s = document.createElement('script');
                           s.textContent = 'window.injected = true';
                           document.body.appendChild(s); }"""
            )
        assert frank.page.evaluate("() => window.injected === undefined")
    finally:
        frank.close()


def test_a_phone_reads_the_pages_and_the_keyboard_alone_signs_in_and_creates_an_app(
    browser: Any, server: ServerProcess, users: dict[str, str]
) -> None:
    from playwright.sync_api import expect

    phone = Visit(
        browser,
        server,
        "phone",
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    page = phone.page
    try:
        # Signing in with the keyboard alone: the skip link first, then the form.
        page.goto("/signin")
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        expect(page.get_by_label("API token")).to_be_focused()
        page.keyboard.type(users["gwen"])
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/$"))
        page.get_by_label("Name").fill("pocket")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/apps/pocket"))
        for path, name in (("/", "apps"), ("/apps/pocket", "app")):
            page.goto(path)
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            wide = page.evaluate(
                "() => [...document.querySelectorAll('body *')]"
                ".filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth)"
                ".map(e => e.tagName + '#' + e.id + '.' + e.className)"
            )
            assert overflow <= 0, f"{path} scrolls sideways on a phone by {overflow} px: {wide}"
            phone.check(f"phone-{name}")
    finally:
        phone.close()
