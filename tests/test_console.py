"""The web console in a real browser: Debian's Chromium driven by Playwright, against a real console.

One console process (``openai-pack console``) and one browser serve the whole file. The console
reads the run store of a home where two workflows really ran (the demo's ticket triage against a
simulator that demands the canary key, and one whose second step fails on a field), and the
integration store holding that key. Every page the browser renders is scanned for the key, the
console token and an extra header's value. Screenshots go to the module's temporary directory
(``SCREENSHOTS`` lists their names; docs/console.md names them too).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from actions.simulator import Simulator
from integration.model import Integration
from integration.store import IntegrationStore
from tests.conftest import CANARY_KEY, REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "console-token-7d2f9a41c0b3e865"
#: A custom header's value is a secret by another name: never on a page either.
HEADER_SECRET = "hdr-secret-9b8c7d6e5f4a3b2c"
SECRETS = (CANARY_KEY, TOKEN, HEADER_SECRET)
SCREENSHOTS = ("login.png", "runs.png", "run.png", "run-failed.png", "run-fanout.png", "workflow.png", "workflow-invalid.png",
               "actions.png", "action-result.png", "action-error.png", "integrations.png", "run-cancelled.png")
TICKET = {"subject": "Printer on floor 3 shows error 49", "body": "The HP printer prints nothing.",
          "customer": "Acme Dental"}

HOT_SUMMARY = """\
name: hot-summary
description: Summarise at the temperature the caller asks for (too hot fails at the summarise step).
inputs:
  text: {type: string, required: true}
  temperature: {type: string, default: "0.2"}
steps:
  - id: moderate
    action: create_moderation
    redact: [results]
    input: {input: "{{ inputs.text }}"}
  - id: summarise
    action: create_chat_completion
    input:
      model: gpt-4o-mini
      temperature: "{{ inputs.temperature }}"
      messages: [{role: user, content: "{{ inputs.text }}"}]
"""
EACH_TEMPERATURE = """\
name: each-temperature
description: One completion per temperature given (a fan-out; too hot an item fails alone).
inputs:
  temperatures: {type: array, items: {type: string}}
steps:
  - id: each
    action: create_chat_completion
    with_items: "{{ inputs.temperatures }}"
    concurrency: 2
    input:
      model: gpt-4o-mini
      temperature: "{{ item }}"
      messages: [{role: user, content: "item {{ index }}"}]
"""
BROKEN = """\
name: broken
steps:
  - id: first
    action: create_moderation
    input: {input: hello}
  - id: second
    action: create_moderatoin
    input: {input: hello}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env, cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=120, check=False)


class Site:
    """The console under test: its URL, its home, the runs made for it, and every page HTML seen."""

    def __init__(self, url: str, env: dict[str, str], runs: dict[str, str], shots: Path, sim: Simulator) -> None:
        self.url, self.env, self.runs, self.shots, self.sim = url, env, runs, shots, sim
        self.pages_seen: list[tuple[str, str]] = []

    def action_calls(self) -> int:
        """Requests the simulator received other than model listings (the forms ask for model choices)."""
        return sum(count for route, count in self.sim.calls_by_route().items() if "models" not in route)

    def waiting_run(self) -> str:
        """A run saved as a webhook would save it, with no worker to take its first step: it stays running."""
        from workers.state.kv import open_kv
        from workers.state.runs import RunStore
        from workers.workflow import load_workflow

        workflow = load_workflow(REPO_ROOT / "docs" / "examples" / "ticket-triage.yaml")
        store = RunStore(open_kv(f"sqlite:///{self.env['OPENAI_PACK_HOME']}/runs.sqlite3"))
        run_id, _ = store.create(workflow=workflow.to_dict(), inputs=TICKET,
                                 trigger={"type": "webhook", "workflow": workflow.name, "event_id": "evt-1"})
        return run_id

    def check(self, page: Any, name: str | None = None) -> str:
        """The page's HTML, scanned for every secret (and kept for the final sweep); a screenshot if named."""
        html = page.content()
        for secret in SECRETS:
            assert secret not in html, f"a secret reached {page.url}"
        self.pages_seen.append((page.url, html))
        if name:
            page.screenshot(path=str(self.shots / name), full_page=True)
        return html


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Two real runs in a fresh home, then ``openai-pack console`` over it on a free loopback port."""
    home = tmp_path_factory.mktemp("console-home")
    shots = tmp_path_factory.mktemp("console-screenshots")
    workflows = tmp_path_factory.mktemp("console-workflows")
    shutil.copy(REPO_ROOT / "docs" / "examples" / "ticket-triage.yaml", workflows / "ticket-triage.yaml")
    (workflows / "hot-summary.yaml").write_text(HOT_SUMMARY)
    (workflows / "each-temperature.yaml").write_text(EACH_TEMPERATURE)
    (workflows / "broken.yaml").write_text(BROKEN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CELERY"))}
    env.update(OPENAI_PACK_HOME=str(home), OPENAI_PACK_CONSOLE_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    with Simulator(port=0, api_key=CANARY_KEY, auth={"placement": "bearer"}) as sim:
        store = IntegrationStore(path=home / "integrations.json")
        store.add(Integration(name="sim", base_url=sim.url, api_key=SecretStr(CANARY_KEY), max_retries=0,
                              timeout={"connect": 2, "read": 10}, rate_limits={"requests_per_minute": 600}),
                  make_default=True)
        store.add(Integration(name="proxy", base_url=sim.url, auth={"placement": "none"},
                              extra_headers={"X-Proxy-Auth": HEADER_SECRET}, features={"legacy_edits": True}))
        port = _free_port()
        # The console starts while the two runs run (all three at once: the slow part is Python starting).
        process = subprocess.Popen([sys.executable, "-m", "workers.cli", "console", "--port", str(port),
                                    "--workflows", str(workflows)], env=env, cwd=REPO_ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        starts = {name: subprocess.Popen([sys.executable, "-m", "workers.cli", "workflow", "run",
                                          str(workflows / f"{name}.yaml"), "--input", json.dumps(inputs), "--json"],
                                         env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)
                  for name, inputs in (("ticket-triage", TICKET), ("hot-summary", {"text": "hello", "temperature": "7"}),
                                       ("each-temperature", {"temperatures": ["0.1", "9", "0.5"]}))}
        runs = {name: json.loads(started.communicate(timeout=120)[0])["id"] for name, started in starts.items()}
        url = f"http://127.0.0.1:{port}/console"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/login", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    pytest.fail(f"the console did not start: {process.communicate(timeout=10)[0]}")
                time.sleep(0.1)
            yield Site(url, env, runs, shots, sim)
        finally:
            process.terminate()
            try:
                output = process.communicate(timeout=15)[0]
            except subprocess.TimeoutExpired:
                process.kill()
                output = process.communicate(timeout=5)[0]
            for secret in (CANARY_KEY, HEADER_SECRET):
                assert secret not in output, "a secret reached the console's output"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium (Playwright's own browser download is not used), one for the whole file."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives every run a fresh temporary profile (user-data-dir), removed on close.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def signed_in(browser: Any, site: Site) -> Iterator[Any]:
    """A browser context signed in through the login form (so the cookie is the one a person gets)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{site.url}/")
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_selector("table.runs")
    page.close()
    yield context
    context.close()


@pytest.fixture
def page(signed_in: Any) -> Iterator[Any]:
    tab = signed_in.new_page()
    yield tab
    tab.close()


# ---------------------------------------------------------------- sign-in


def test_every_page_needs_the_token(browser: Any, site: Site) -> None:
    context = browser.new_context()
    try:
        tab = context.new_page()
        for path in ("/", f"/runs/{site.runs['ticket-triage']}", "/workflows", "/actions/create_moderation",
                     "/integrations"):
            response = tab.goto(site.url + path)
            assert response.status == 401
            site.check(tab)
            assert tab.locator("#token").is_visible()
            shown = tab.inner_text("main")
            assert not any(word in shown for word in ("ticket-triage", "succeeded", "moderate", "Create Moderation"))
        tab.fill("#token", "not-the-console-token-at-all")
        tab.press("#token", "Enter")
        tab.wait_for_selector("#login-error")
        site.check(tab, "login.png")
        tab.fill("#token", TOKEN)
        tab.click("button[type=submit] >> text=Sign in")
        tab.wait_for_selector("h1:has-text('Integrations')")  # back where it was asked for
        cookie = next(c for c in context.cookies() if c["name"] == "opk_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    finally:
        context.close()


def test_a_foreign_host_name_is_refused(site: Site) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 gets nothing, even with the token."""
    answer = httpx.get(f"{site.url}/", headers={"Host": "evil.example", "Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 421
    assert site.runs["ticket-triage"] not in answer.text


def test_unknown_and_malformed_run_ids_are_not_found(site: Site) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for run_id in ("20990101000000-000000000000", "x" * 65, "a%20b", "%00", "%ED%A0%80"):
        answer = httpx.get(f"{site.url}/runs/{run_id}", headers=bearer)
        assert answer.status_code == 404 and "No run with that id" in answer.text, run_id
    cancel = httpx.post(f"{site.url}/runs/{'x' * 65}/cancel", headers=bearer)
    assert cancel.status_code == 404


# ---------------------------------------------------------------- runs


def test_runs_list_shows_the_runs_and_filters_them(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/")
    triage = page.locator(f"tr[data-run='{site.runs['ticket-triage']}']")
    assert "succeeded" in triage.inner_text() and "ticket-triage" in triage.inner_text()
    assert "manual" in triage.inner_text() and "$" in triage.inner_text()
    hot = page.locator(f"tr[data-run='{site.runs['hot-summary']}']")
    assert "failed" in hot.inner_text()
    site.check(page, "runs.png")
    page.select_option("select[name=status]", "failed")
    page.click("button:has-text('Filter')")
    page.wait_for_url("**status=failed**")
    shown = {page.locator("table.runs tbody tr").nth(i).get_attribute("data-run")
             for i in range(page.locator("table.runs tbody tr").count())}
    assert shown == {site.runs["hot-summary"], site.runs["each-temperature"]}
    page.select_option("select[name=workflow]", "hot-summary")
    page.click("button:has-text('Filter')")
    page.wait_for_url("**workflow=hot-summary**")
    assert page.locator("table.runs tbody tr").count() == 1
    assert page.locator(f"tr[data-run='{site.runs['hot-summary']}']").count() == 1
    site.check(page)


def test_run_page_shows_the_three_steps_their_timeline_and_output(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/")
    page.click(f"a:has-text('{site.runs['ticket-triage']}')")
    page.wait_for_selector("#run-status")
    assert page.inner_text("#run-status") == "succeeded"
    steps = page.locator("details.step")
    assert [steps.nth(i).get_attribute("id") for i in range(steps.count())] == \
        ["step-moderate", "step-summarise", "step-classify"]
    for i in range(3):
        assert "succeeded" in steps.nth(i).locator("summary").inner_text()
    assert page.locator(".timeline .bar rect").count() == 3
    assert '"category": "hardware"' in page.inner_text("#run-output")
    assert "Simulated reply" in page.inner_text("#step-summarise pre.output")
    tokens = page.inner_text("#tokens")
    assert tokens.endswith(str(sum(int(t) for t in tokens.split(" = ")[0].split() if t.isdigit())))
    assert int(tokens.rsplit("= ", 1)[1]) > 0
    assert page.inner_text("#trigger").startswith("manual")
    assert page.inner_text("#cost").startswith("$") and float(page.inner_text("#cost")[1:].split()[0]) > 0
    assert "$" in page.locator("#step-summarise summary").inner_text()  # each step's own estimate
    assert page.locator("form.cancel").count() == 0  # finished: nothing to cancel
    site.check(page, "run.png")


def test_failed_step_shows_its_error_code_and_field(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/runs/{site.runs['hot-summary']}")
    assert page.inner_text("#run-status") == "failed"
    error = page.locator("#step-summarise .step-error")
    assert "invalid_input" in error.inner_text()
    assert "temperature" in error.inner_text() and "at most 2" in error.inner_text()
    moderate = page.locator("#step-moderate")
    assert "succeeded" in moderate.locator("summary").inner_text()
    assert '"results": "[redacted]"' in moderate.locator("pre.output").inner_text()  # the step's redact: path
    site.check(page, "run-failed.png")


def test_fan_out_shows_item_counts_and_the_failed_item(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/runs/{site.runs['each-temperature']}")
    fanout = page.locator("#step-each .fanout")
    assert "3 of 3 done · 2 succeeded · 1 failed" in fanout.inner_text()
    assert page.get_attribute("#step-each progress", "value") == "3"
    failed = fanout.locator("li").all_inner_texts()
    assert len(failed) == 1 and failed[0].startswith("item 1: invalid_input") and "temperature" in failed[0]
    site.check(page, "run-fanout.png")


def test_runs_list_updates_live_and_a_run_is_cancelled_from_its_page(page: Any, site: Site) -> None:
    """A run that is waiting (no worker here) appears without a reload; its page cancels it."""
    page.goto(f"{site.url}/")
    before = page.locator("table.runs tbody tr").count()
    run_id = site.waiting_run()
    page.wait_for_selector(f"tr[data-run='{run_id}']")  # the page polls; no reload
    assert page.locator("table.runs tbody tr").count() == before + 1
    row = page.locator(f"tr[data-run='{run_id}']").inner_text()
    assert "running" in row and "webhook" in row
    page.click(f"a:has-text('{run_id}')")
    page.wait_for_selector("form.cancel")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form.cancel button")
    page.wait_for_selector("p.notice")
    assert page.inner_text("#run-status") == "cancelled"
    site.check(page, "run-cancelled.png")


# ---------------------------------------------------------------- workflows


def test_workflow_graph_is_drawn_from_the_file(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/workflows")
    page.click("a:has-text('ticket-triage')")
    page.wait_for_selector("svg.graph")
    nodes = page.locator("svg.graph g.node")
    assert sorted(nodes.nth(i).get_attribute("data-step") for i in range(nodes.count())) == \
        ["classify", "moderate", "reject", "summarise"]
    assert page.locator("svg.graph g.edge").count() == 3
    transitions = page.inner_text("table")
    assert "steps.moderate.output.results[0].flagged" in transitions and "rejected" in transitions
    site.check(page, "workflow.png")


def test_an_invalid_workflow_shows_its_error_at_the_step_and_field(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/workflows")
    row = page.locator("tr:has(a:has-text('broken'))")
    assert "at step second" in row.inner_text() and "field action" in row.inner_text()
    row.locator("a").click()
    page.wait_for_selector("#error-step")
    assert page.inner_text("#error-step") == "second" and page.inner_text("#error-field") == "action"
    assert "create_moderation" in page.inner_text(".validation")  # the suggestion
    assert page.locator("svg.graph g.node.invalid").get_attribute("data-step") == "second"  # drawn at its step
    site.check(page, "workflow-invalid.png")


# ---------------------------------------------------------------- actions


def test_actions_search_by_name_and_category(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/actions")
    page.fill("input[name=q]", "moderation")
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**q=moderation**")
    assert "create_moderation" in page.locator("tbody tr td:first-child").all_inner_texts()
    page.fill("input[name=q]", "")
    page.select_option("select[name=category]", "Moderations")
    page.click("button:has-text('Search')")
    page.wait_for_url("**category=Moderations**")
    assert page.locator("tbody tr td:first-child").all_inner_texts() == ["create_moderation"]
    site.check(page, "actions.png")


def test_create_moderation_form_runs_with_the_keyboard(page: Any, site: Site) -> None:
    calls = site.action_calls()
    page.goto(f"{site.url}/actions/create_moderation")
    assert page.get_attribute("#field-model", "placeholder") == "omni-moderation-latest"  # the manifest's default
    assert page.locator("#choices-model option[value='omni-moderation-latest']").count() == 1
    assert not page.is_visible("#field-model")  # optional fields start folded
    page.focus("#integration")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "field-input"
    page.keyboard.type("I will fix the printer tomorrow.")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"
    page.keyboard.press("Enter")  # unfolds the optional fields
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "field-model"
    page.keyboard.type("omni-moderation-latest")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "run-action"
    page.keyboard.press("Enter")
    page.wait_for_selector("#result")
    output = page.inner_text("#result pre")
    assert '"flagged": false' in output and '"model": "omni-moderation-latest"' in output
    assert page.evaluate("document.activeElement.id") == "result"
    assert site.action_calls() > calls
    site.check(page, "action-result.png")


def test_a_wrong_value_gets_the_field_named_error_before_any_call(page: Any, site: Site) -> None:
    calls = site.action_calls()
    page.goto(f"{site.url}/actions/create_chat_completion")
    page.fill("#field-messages", '[{"role": "user", "content": "hi"}]')
    page.fill("#field-model", "gpt-4o-mini")
    page.click("details.optional summary")
    page.fill("#field-temperature", "7")
    page.click("#run-action")
    page.wait_for_selector("#form-error")
    assert "invalid_input" in page.inner_text("#form-error")
    assert "temperature: must be at most 2" in page.inner_text("#err-temperature")
    assert page.get_attribute("#field-temperature", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "field-temperature"  # focus on the field to fix
    assert page.input_value("#field-temperature") == "7"  # what was typed stays
    assert site.action_calls() == calls
    site.check(page, "action-error.png")


# ---------------------------------------------------------------- integrations and safety


def test_integrations_page_shows_no_key(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/integrations")
    sim = page.locator("tr[data-integration='sim']").inner_text()
    assert "default" in sim and site.sim.url in sim and "stored" in sim and "600 req/min" in sim
    proxy = page.locator("tr[data-integration='proxy']").inner_text()
    assert "X-Proxy-Auth" in proxy and "legacy_edits" in proxy and "none" in proxy
    site.check(page, "integrations.png")


def test_posts_without_the_pages_csrf_value_are_refused(page: Any, site: Site) -> None:
    """The signed-in browser's cookie alone never runs an action or cancels a run."""
    page.goto(f"{site.url}/actions/create_moderation")
    csrf = page.get_attribute("input[name=csrf]", "value")
    calls = site.action_calls()
    forged = [
        {"form": {"input": "hello"}},
        {"form": {"input": "hello", "csrf": "0" * 64}},
        {"form": {"input": "hello", "csrf": csrf}, "headers": {"Origin": "http://evil.example"}},
    ]
    for attempt in forged:
        answer = page.request.post(f"{site.url}/actions/create_moderation", **attempt)
        assert answer.status == 403, attempt
        assert "CSRF" in answer.text()
    running = page.request.post(f"{site.url}/runs/{site.runs['ticket-triage']}/cancel", form={})
    assert running.status == 403
    assert site.action_calls() == calls
    accepted = page.request.post(f"{site.url}/actions/create_moderation", form={"input": "hello", "csrf": csrf},
                                 headers={"Origin": site.url.rsplit("/console", 1)[0]})
    assert accepted.status == 200 and site.action_calls() == calls + 1


def test_no_page_ever_holds_a_secret(page: Any, site: Site) -> None:
    """Every page and fragment reachable from the navigation, plus all seen by the other tests."""
    urls = [f"{site.url}/", f"{site.url}/?fragment=1", f"{site.url}/workflows", f"{site.url}/actions",
            f"{site.url}/integrations", f"{site.url}/workflows/hot-summary"]
    for run_id in site.runs.values():
        urls += [f"{site.url}/runs/{run_id}", f"{site.url}/runs/{run_id}?fragment=1",
                 f"{site.url}/runs/{run_id}/workflow"]
    for url in urls:
        assert page.goto(url).status == 200, url
        site.check(page)
    for url, html in site.pages_seen:
        for secret in SECRETS:
            assert secret not in html, url
    assert len(site.pages_seen) >= 20


def test_screenshots_of_every_page_are_written(site: Site) -> None:
    """Runs last in this file: the earlier tests wrote one screenshot per page."""
    written = sorted(p.name for p in site.shots.iterdir())
    assert written == sorted(SCREENSHOTS), written
    assert all((site.shots / name).stat().st_size > 5000 for name in SCREENSHOTS)


# ---------------------------------------------------------------- without a browser


def test_serve_mounts_the_console_only_with_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from workers.triggers.webhooks import create_app

    workflows = tmp_path / "workflows"
    workflows.mkdir()
    shutil.copy(REPO_ROOT / "docs" / "examples" / "ticket-triage.yaml", workflows)
    monkeypatch.delenv("OPENAI_PACK_CONSOLE_TOKEN", raising=False)
    with TestClient(create_app(workflows), base_url="http://127.0.0.1") as client:
        assert client.get("/console/").status_code == 404
    monkeypatch.setenv("OPENAI_PACK_CONSOLE_TOKEN", TOKEN)
    with TestClient(create_app(workflows), base_url="http://127.0.0.1") as client:
        assert client.get("/console/").status_code == 401
        signed = client.get("/console/workflows", headers={"Authorization": f"Bearer {TOKEN}"})
        assert signed.status_code == 200 and "ticket-triage" in signed.text
        assert "script-src 'self'" in signed.headers["content-security-policy"]
        assert client.get("/healthz").status_code == 200  # the hooks are still there


def test_console_command_refuses_beyond_loopback_without_a_token(isolated_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_PACK_HOME"] = str(isolated_home)
    done = _cli(env, "console", "--host", "0.0.0.0")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert json.loads(done.stderr)["error"]["field"] == "OPENAI_PACK_CONSOLE_TOKEN"


@pytest.mark.parametrize(("options", "token", "field"), [
    ({"port": 70000}, TOKEN, "--port"),
    ({"workflows": Path("/no/such/dir")}, TOKEN, "--workflows"),
    ({}, "short", "OPENAI_PACK_CONSOLE_TOKEN"),
    ({}, " " + TOKEN, "OPENAI_PACK_CONSOLE_TOKEN"),
])
def test_console_command_refuses_bad_settings(options: dict[str, Any], token: str, field: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from integration.errors import ConfigError
    from workers.cli.console import console

    monkeypatch.setenv("OPENAI_PACK_CONSOLE_TOKEN", token)
    with pytest.raises(ConfigError) as refused:
        console(**options)
    assert refused.value.details["field"] == field
    assert token not in refused.value.message


@pytest.mark.parametrize("definition", [
    {"steps": "not a list"},
    {"steps": [{"id": "a", "on": 5}, {"id": 7}, "text", {"id": "b", "on": [{"do": "a"}, 3, {"do": [None, "a"]}]}]},
    {"steps": [{"id": "a", "on": [{"do": ["a"], "publish": [1]}]}], "start": ["x"]},
])
def test_an_invalid_file_is_drawn_as_far_as_it_goes(definition: dict[str, Any]) -> None:
    """The Workflows page draws a file that failed validation from its raw YAML: no shape may break it."""
    from workers.console.views import graph

    drawn = graph(definition)
    assert {node["id"] for node in drawn["nodes"]} <= {"a", "b"}
    assert all(edge["to"] == "a" for edge in drawn["edges"])
