"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

``mas up examples/healthcare`` runs against the test's Redis with write actions on; a second,
read-only ``mas dashboard`` reads the same Redis. The pages are opened before the
consultation ends and follow it live (no reload): the agents page lists both agents, the
decision feed shows the DLP block and the denied admin message, the graph has the
patient→doctor edge, and the doctor's dead letter (the empty question) is replayed from the
dashboard with write actions and cannot be from the read-only one. With
``MAS_DASHBOARD_SCREENSHOTS=DIR`` the test also saves a screenshot of each page there (how
``docs/dashboard-*.png`` were made).

Skipped only when no Chromium can be found at all; Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_local_mode import MAS, MasUp

from mas_cli.local.redis_server import RedisServer

playwright = pytest.importorskip("playwright.sync_api")

HEALTHCARE = Path(__file__).resolve().parent.parent / "examples" / "healthcare"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS = 60_000  # a guard against a hang, not a claim about speed
SAFETY_CAP_S = "180"  # mas up stops by itself after this


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no Chromium found (apt-get install -y chromium)")
    return found


@pytest.fixture
def url_file(redis_url: str, tmp_path: Path) -> Path:
    """The administrator's URL in a file (never on a command line)."""
    path = tmp_path / "redis-url"
    path.write_text(redis_url)
    path.chmod(0o600)
    return path


@pytest.fixture
def healthcare(url_file: Path, tmp_path: Path) -> Iterator[tuple[MasUp, str, str]]:
    """``mas up examples/healthcare`` with write actions; it, its dashboard URL and token."""
    with MasUp(
        str(HEALTHCARE), "--dashboard-writes", "--duration", SAFETY_CAP_S,
        "--state-dir", str(tmp_path / "state"), "--log-dir", str(tmp_path / "logs"),
        cwd=tmp_path, env={"MAS_REDIS_URL_FILE": str(url_file)},
    ) as up:  # fmt: skip
        url = up.wait_for(r"dashboard at (http://127\.0\.0\.1:\d+/)", timeout=60)[1]
        token = (tmp_path / "state" / "dashboard-token").read_text().strip()
        yield up, url, token
        status, output = up.interrupt()
        assert status == 0, output


@pytest.fixture
def read_only(url_file: Path, redis_server: RedisServer) -> Iterator[str]:
    """``mas dashboard`` without write actions, on a free port; its URL."""
    process = subprocess.Popen(
        [*MAS, "dashboard", "--port", "0"],
        env={**os.environ, "MAS_REDIS_URL_FILE": str(url_file)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if match := re.match(r"dashboard at (\S+)", line):
                yield match[1]
                break
        else:
            pytest.fail("mas dashboard printed no URL")
    finally:
        process.terminate()
        process.wait(30)


def shoot(page: playwright.Page, name: str) -> None:
    where = os.environ.get("MAS_DASHBOARD_SCREENSHOTS")
    if where:
        page.screenshot(path=str(Path(where) / f"dashboard-{name}.png"), full_page=True)


def test_the_dashboard_follows_the_healthcare_example_live(
    healthcare: tuple[MasUp, str, str], read_only: str, tmp_path: Path
) -> None:
    up, url, token = healthcare
    with playwright.sync_playwright() as driver:
        # Playwright gives the browser an empty profile of its own (a new user data dir).
        browser = driver.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{url}#agents")

        # Agents: both, live (the page was opened while the consultation ran).
        for agent in ("default/patient", "default/doctor"):
            page.locator(f'#agents-table tr[data-agent="{agent}"]').wait_for()
        up.wait_for(r"^patient\[0\] +\| consultation finished", timeout=WAIT_MS / 1000)
        page.locator('#agents-table tr[data-agent="default/doctor"] td:nth-child(11)').filter(
            has_text=re.compile(r"^1$")
        ).wait_for()
        shoot(page, "agents")

        # Decisions: the DLP block and the denied admin message, found with the filter.
        page.click('a[data-page="decisions"]')
        page.select_option("#kind-filter", "dlp_blocked")
        blocked = page.locator('#decisions-table tr[data-kind="dlp_blocked"]')
        blocked.first.wait_for()
        assert "payment_card" in blocked.first.inner_text()
        assert page.locator('#decisions-table tbody tr:not([data-kind="dlp_blocked"])').count() == 0
        page.select_option("#kind-filter", "denied")
        page.locator('#decisions-table tr[data-kind="denied"]').filter(
            has_text="admin.records.export"
        ).wait_for()
        page.select_option("#kind-filter", "")
        shoot(page, "decisions")

        # Graph: the patient→doctor edge.
        page.click('a[data-page="graph"]')
        page.locator('g.edge[data-from="default/patient"][data-to="default/doctor"]').wait_for()
        shoot(page, "graph")

        # Policies: the healthcare policy, applied.
        page.click('a[data-page="policies"]')
        page.locator('#policies-table tr[data-policy="default/healthcare"]').filter(
            has_text="applied"
        ).wait_for()
        shoot(page, "policies")

        # Dead letters, read-only: no button, and the API refuses.
        viewer = browser.new_page()
        viewer.set_default_timeout(WAIT_MS)
        viewer.goto(f"{read_only}#dead-letters")
        row = viewer.locator('#dead-letters-table tr[data-agent="default/doctor"]')
        row.wait_for()
        dead_letter = row.get_attribute("data-id")
        assert viewer.locator("#dead-letters-table button").count() == 0
        refused = viewer.evaluate(
            """async ([id, token]) => {
                const r = await fetch(`/api/agents/default/doctor/dead-letters/${id}/replay`,
                    {method: "POST", headers: {Authorization: `Bearer ${token}`}});
                return [r.status, (await r.json()).error.code];
            }""",
            [dead_letter, token],
        )
        assert refused == [403, "writes_disabled"]

        # Dead letters, with write actions: replayed with the token.
        page.click('a[data-page="dead-letters"]')
        mine = page.locator(f'#dead-letters-table tr[data-id="{dead_letter}"]')
        mine.wait_for()
        shoot(page, "dead-letters")
        page.fill("#token", token)
        mine.locator("button.replay").click()
        page.locator("#action-result").filter(has_text=f"replayed {dead_letter}").wait_for()
        mine.wait_for(state="detached")  # gone; the doctor dead-letters the message again
        page.locator('#dead-letters-table tr[data-agent="default/doctor"]').wait_for()
        browser.close()
