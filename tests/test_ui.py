"""The operations dashboard (/ui) over real uvicorn with the watcher processing the zone: sign-in
with tenant and reader credentials, who sees which tenant, no patient value on any page (a
planted marker), and a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by Selenium: log in, see the tenant and its files, watch a new file appear without a
reload, follow a report link, see a reject reason. Screenshots go to tests/artifacts/
(``DROPZONE_UPDATE_SCREENSHOTS=1`` also copies two into docs/screenshots/ for the README)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jwt
import orjson
import pytest
from api_support import SIGNING_KEY, Harness, build, live_server, samples_dir

from dropzone.api.reader_files import IssuedReader, add_reader
from dropzone.api.tenant_files import rotate_secret
from dropzone.api.tokens import AUDIENCE, ISSUER

REPO = Path(__file__).resolve().parents[1]
BULK = samples_dir() / "smart-bulk-fhir-10-patients"
MARKER = "ZZMARKER123"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FINAL = {"archived", "partial", "quarantined", "duplicate"}
REFRESH = 1.05  # the credential registry re-reads changed files at most once a second


def _sample(name: str, count: int | None = None) -> list[dict[str, Any]]:
    lines = [line for line in (BULK / name).read_bytes().splitlines() if line.strip()]
    return [orjson.loads(line) for line in lines[:count]]


def _mark(patient: dict[str, Any], n: int) -> dict[str, Any]:
    """A still valid Patient whose names, telecom, address and identifier hold the marker."""
    patient["name"] = [{"use": "official", "family": f"{MARKER}Family{n}", "given": [f"{MARKER}Given"]}]
    patient["telecom"] = [{"system": "phone", "value": f"555-{MARKER}"}]
    patient["address"] = [{"line": [f"{n} {MARKER} Street"], "city": f"{MARKER}ville"}]
    patient["identifier"] = [{"system": "http://example.org/mrn", "value": f"{MARKER}-{n}"}]
    return patient


def _ndjson(resources: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in resources)


def good_file() -> bytes:
    """Thirteen sample Patients with the marker in their names, plus a Condition whose code
    and note carry it and whose subject is a conditional reference on a marked identifier
    that matches nothing (an unresolved reference, listed without its text)."""
    patients = [_mark(p, n) for n, p in enumerate(_sample("Patient.000.ndjson"))]
    condition = _sample("Condition.000.ndjson", 1)[0]
    condition["subject"] = {"reference": f"Patient?identifier=http://example.org/mrn|{MARKER}-none"}
    condition.pop("encounter", None)
    condition["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "91302008"}], "text": MARKER}
    condition["note"] = [{"text": f"{MARKER} note"}]
    return _ndjson([*patients, condition])


def mixed_file() -> bytes:
    """One valid marked Patient and three rejects: an invalid birthDate and gender holding the
    marker, an unknown element whose value is the marker, and a line that is not JSON."""
    first, second, third = _sample("Patient.000.ndjson", 3)
    bad = _mark(second, 100)
    bad["birthDate"] = MARKER
    bad["gender"] = MARKER
    unknown = _mark(third, 101)
    unknown["nickname"] = MARKER
    return _ndjson(
        [_mark(first, 99), bad, unknown, f'{{"resourceType": "Patient", "name": "{MARKER}'.encode()]
    )


def beta_file() -> bytes:
    return _ndjson([_mark(p, 200 + n) for n, p in enumerate(_sample("Patient.000.ndjson", 4))])


@dataclass
class Dashboard:
    h: Harness
    reader: IssuedReader

    @property
    def config(self) -> Path:
        return self.h.settings.config_dir  # type: ignore[return-value]

    def creds(self, who: str) -> tuple[str, str]:
        if who == "ops":
            return self.reader.client_id, self.reader.client_secret
        c = self.h.creds[who]
        return c.client_id, c.client_secret

    def file_id(self, tenant: str, name: str) -> str:
        return next(f["_id"] for f in self.h.store.ledger.files(tenant, 500) if f.get("name") == name)


def drop_file(h: Harness, tenant: str, name: str, body: bytes) -> None:
    """Write the file beside incoming/ and rename it in, as a careful uploader does."""
    target = h.zone / "incoming" / tenant
    target.mkdir(parents=True, exist_ok=True)
    tmp = h.zone / f".{name}.tmp"
    tmp.write_bytes(body)
    tmp.rename(target / name)


def wait_files(h: Harness, tenant: str, names: set[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        done = {f["name"]: f for f in h.store.ledger.files(tenant, 500) if f.get("state") in FINAL}
        if names <= set(done):
            return done
        assert time.monotonic() < deadline, f"{tenant}: {names - set(done)} not finished after {timeout}s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("ui")
    h = build(root, tenants=("acme", "beta", "gamma"))
    reader = add_reader(root / "config", "ops", frozenset({"acme"}))
    with live_server(h) as h:
        drop_file(h, "acme", "patients.ndjson", good_file())
        wait_files(h, "acme", {"patients.ndjson"})  # first, so the mixed file's Patient is a change
        drop_file(h, "acme", "mixed.ndjson", mixed_file())
        drop_file(h, "beta", "beta-patients.ndjson", beta_file())
        done = wait_files(h, "acme", {"patients.ndjson", "mixed.ndjson"})
        assert done["patients.ndjson"]["state"] == "archived"
        assert done["mixed.ndjson"]["state"] == "partial"
        assert done["mixed.ndjson"]["counts"]["rejected"] == 3
        wait_files(h, "beta", {"beta-patients.ndjson"})
        yield Dashboard(h, reader)


def sign_in(d: Dashboard, who: str) -> httpx.Client:
    client = httpx.Client(base_url=d.h.url, timeout=30)
    client_id, secret = d.creds(who)
    r = client.post("/ui/login", data={"client_id": client_id, "client_secret": secret})
    assert r.status_code == 303 and r.headers["location"] == "/ui", r.text
    return client


def settled(c: httpx.Client, path: str, timeout: float = 30.0) -> httpx.Response:
    """GET ``path`` until the tenant scans (references, quality; run in the background) are in."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(path)
        if "scan-pending" not in r.text:
            return r
        assert time.monotonic() < deadline, f"{path}: the tenant scans did not finish in {timeout}s"
        time.sleep(0.1)


@contextlib.contextmanager
def session(d: Dashboard, who: str) -> Iterator[httpx.Client]:
    client = sign_in(d, who)
    try:
        yield client
    finally:
        client.close()


# -- sign-in and sessions --------------------------------------------------------------------------


def test_pages_need_a_session(dash: Dashboard) -> None:
    with httpx.Client(base_url=dash.h.url, timeout=30) as anon:
        r = anon.get("/ui")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        r = anon.get("/ui/tenants/acme")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/tenants/acme"
        file_id = dash.file_id("acme", "mixed.ndjson")
        assert anon.get(f"/ui/tenants/acme/files/{file_id}/report.json").status_code == 303
        login = anon.get("/ui/login")
        assert login.status_code == 200 and 'type="password"' in login.text
        assert "default-src 'none'" in login.headers["content-security-policy"]
        assert login.headers["cache-control"] == "no-store"


def test_sign_in_sets_a_signed_strict_httponly_cookie_and_sign_out_ends_it(dash: Dashboard) -> None:
    client_id, secret = dash.creds("acme")
    with httpx.Client(base_url=dash.h.url, timeout=30) as c:
        wrong = c.post("/ui/login", data={"client_id": client_id, "client_secret": secret + "x"})
        assert wrong.status_code == 401 and "wrong secret" in wrong.text and "set-cookie" not in wrong.headers
        assert secret not in wrong.text
        r = c.post(
            "/ui/login", data={"client_id": client_id, "client_secret": secret, "next": "/ui/tenants/acme"}
        )
        assert r.status_code == 303 and r.headers["location"] == "/ui/tenants/acme"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        value = re.match(r"dz_ui_session=([^;]+)", cookie)[1]  # type: ignore[index]
        # Signed with the key the API signs its tokens with: it is the API's own token.
        claims = jwt.decode(value, SIGNING_KEY, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
        assert claims["tenant"] == "acme" and claims["kind"] == "tenant"
        assert c.get("/ui").status_code == 200
    # A cookie whose signature does not match is no session; sign-out refuses the token after.
    tampered = value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB")
    with httpx.Client(base_url=dash.h.url, timeout=30) as bare:
        assert bare.get("/ui", headers={"Cookie": f"dz_ui_session={tampered}"}).status_code == 303
        assert bare.get("/ui", headers={"Cookie": f"dz_ui_session={value}"}).status_code == 200
        out = bare.post("/ui/logout", headers={"Cookie": f"dz_ui_session={value}"})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert 'dz_ui_session=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
        # The same token sent again (a copy taken before sign-out) is refused.
        assert bare.get("/ui", headers={"Cookie": f"dz_ui_session={value}"}).status_code == 303
    with httpx.Client(base_url=dash.h.url, timeout=30) as c:
        # Another site cannot post the sign-in form (nor sign-out) for the browser.
        evil = c.post(
            "/ui/login",
            data={"client_id": client_id, "client_secret": secret},
            headers={"Origin": "http://evil.example"},
        )
        assert evil.status_code == 403 and "set-cookie" not in evil.headers
        assert c.post("/ui/logout", headers={"Origin": "http://evil.example"}).status_code == 403
        hop = c.post(
            "/ui/login", data={"client_id": client_id, "client_secret": secret, "next": "//evil.example"}
        )
        assert hop.headers["location"] == "/ui"  # only /ui paths are followed after sign-in


def test_a_rotated_secret_ends_the_session(dash: Dashboard) -> None:
    with session(dash, "gamma") as c:
        assert c.get("/ui/tenants/gamma").status_code == 200
        rotate_secret(dash.config, "gamma")
        time.sleep(REFRESH)
        r = c.get("/ui/tenants/gamma")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


# -- who sees what ---------------------------------------------------------------------------------


def test_a_tenant_sees_only_itself(dash: Dashboard) -> None:
    acme_file = dash.file_id("acme", "mixed.ndjson")
    beta_file_id = dash.file_id("beta", "beta-patients.ndjson")
    with session(dash, "beta") as c:
        home = c.get("/ui")
        assert home.status_code == 200
        assert 'href="/ui/tenants/beta"' in home.text and "/ui/tenants/acme" not in home.text
        assert c.get("/ui/tenants/beta").status_code == 200
        assert c.get(f"/ui/tenants/beta/files/{beta_file_id}").status_code == 200
        refused = [
            "/ui/tenants/acme",
            f"/ui/tenants/acme/files/{acme_file}",
            f"/ui/tenants/acme/files/{acme_file}/report.json",
            f"/ui/tenants/beta/files/{acme_file}",  # acme's file under beta's own path
            f"/ui/tenants/beta/files/{acme_file}/report.json",
        ]
        bodies = set()
        for path in refused:
            r = c.get(path)
            assert r.status_code == 404, path
            assert "mixed.ndjson" not in r.text
            bodies.add(r.text)
        nosuch = c.get("/ui/tenants/nosuch")
        assert nosuch.status_code == 404 and bodies == {nosuch.text}  # existence does not leak


def test_a_reader_sees_its_listed_tenants(dash: Dashboard) -> None:
    with session(dash, "ops") as c:
        home = c.get("/ui")
        assert "Signed in as reader <strong>ops</strong>" in home.text
        assert 'href="/ui/tenants/acme"' in home.text and "/ui/tenants/beta" not in home.text
        assert c.get("/ui/tenants/acme").status_code == 200
        assert c.get("/ui/tenants/beta").status_code == 404
        beta_file_id = dash.file_id("beta", "beta-patients.ndjson")
        assert c.get(f"/ui/tenants/beta/files/{beta_file_id}").status_code == 404


# -- what the pages show ---------------------------------------------------------------------------


def test_tenant_page_shows_files_rejects_references_counts_and_quality(dash: Dashboard) -> None:
    mixed = dash.file_id("acme", "mixed.ndjson")
    with session(dash, "acme") as c:
        page = settled(c, "/ui/tenants/acme").text
        for fragment in (
            ">patients.ndjson</a>",
            ">mixed.ndjson</a>",
            f'href="/ui/tenants/acme/files/{mixed}#report"',
            f'href="/ui/tenants/acme/files/{mixed}/report.json"',
            'class="badge b-partial"',
            "<code>code_not_in_value_set</code>",
            "<code>Patient.gender</code>",
            "<code>Patient.birthDate</code>",
            "<code>unknown_element</code>",
            "<code>invalid_json</code>",
            "<code>Condition.subject</code>",
            "<code>conditional_no_single_match</code>",
            # 13 Patients: the mixed file's valid one changes one of them, its other two are rejected.
            '<th scope="row">Patient</th><td class="num">13</td>',
            'id="quality-findings"',
            "<code>http://snomed.info/sct</code>",
        ):
            assert fragment in page, fragment
        # The day's bar: both files counted today.
        today = time.strftime("%Y-%m-%d", time.gmtime())
        row = re.search(rf'<time datetime="{today}">.*?</tr>', page, re.S)[0]  # type: ignore[index]
        assert re.findall(r'<td class="num">(\d+)</td>', row)[:6] == ["1", "1", "0", "0", "0", "2"]
        report = c.get(f"/ui/tenants/acme/files/{mixed}")
        assert report.status_code == 200
        assert 'id="rejected-records"' in report.text and "line 2" in report.text
        assert "not a valid date" in report.text  # the pipeline's value-free message
        raw = c.get(f"/ui/tenants/acme/files/{mixed}/report.json")
        assert raw.headers["content-type"].startswith("application/json")
        assert raw.json()["outcome"] == "partial" and raw.json()["counts"]["rejected"] == 3


def test_tenant_scans_run_in_the_background_and_follow_the_tenant_state() -> None:
    """A slow scan does not hold the page: it answers without it (pending), then with it; a
    changed tenant state shows the previous scan (pending) until the new one is in."""
    from dropzone.api.ui.data import Scan, UiCache

    cache = UiCache()
    release = threading.Event()

    def slow(label: str) -> Scan:
        release.wait(10)
        return Scan(None, None, None, label, "now", 0.0)

    assert cache.scan("acme", ("s1",), lambda: slow("first"), wait=0.01) == (None, True)
    release.set()
    deadline = time.monotonic() + 10
    while (got := cache.scan("acme", ("s1",), lambda: slow("again"), wait=0.5))[1]:
        assert time.monotonic() < deadline
    assert got[0] is not None and got[0].quality_note == "first"  # computed once, then reused
    release.clear()
    scan, pending = cache.scan("acme", ("s2",), lambda: slow("second"), wait=0.01)
    assert pending and scan is not None and scan.quality_note == "first"
    release.set()
    while (got := cache.scan("acme", ("s2",), lambda: slow("third"), wait=0.5))[1]:
        assert time.monotonic() < deadline
    assert got[0] is not None and got[0].quality_note == "second"


def _links(base: str, html: str) -> set[str]:
    out = set()
    for href in re.findall(r'(?:href|src|action)="([^"]+)"', html):
        url = urljoin(base, href.replace("&amp;", "&"))
        path = urlsplit(url)
        if path.path.startswith("/ui"):
            out.add(path.path + (f"?{path.query}" if path.query else ""))
    return out


def test_no_planted_value_reaches_any_page(dash: Dashboard) -> None:
    """The marker is in stored names, telecom, addresses, identifier values, a code's text, a
    note, a conditional reference and in rejected records (invalid values, an unknown element's
    value, a broken line). Every page and report the dashboard links to, for a tenant and a
    reader, is fetched: the marker appears in none of them."""
    h = dash.h
    # The planted data is really there, so a leak would show.
    stored = h.store.resources.iter_resources("acme", "Patient")
    assert any(MARKER in orjson.dumps(p).decode() for p in stored)
    rejects = next(f for f in h.store.ledger.files("acme") if f["name"] == "mixed.ndjson")["rejects"]
    assert MARKER in h.source.read_bytes(rejects).decode()
    visited: dict[str, int] = {}
    for who in ("acme", "ops", "beta"):
        with session(dash, who) as c:
            todo = ["/ui", "/ui/login"]
            seen: set[str] = set()
            while todo:
                path = todo.pop()
                if path in seen or path.startswith("/ui/logout"):
                    continue
                seen.add(path)
                r = settled(c, path)
                assert r.status_code in (200, 303), (who, path, r.status_code)
                assert MARKER.lower() not in r.text.lower(), f"{who}: {path} shows a planted value"
                visited[path] = r.status_code
                if r.headers.get("content-type", "").startswith("text/html"):
                    todo.extend(_links(str(r.url), r.text) - seen)
    file_pages = [p for p in visited if "/files/" in p and not p.endswith("report.json")]
    reports = [p for p in visited if p.endswith("/report.json")]
    assert len(file_pages) >= 3 and len(reports) >= 1, sorted(visited)
    assert {"/ui/tenants/acme", "/ui/tenants/beta"} <= set(visited)


# -- a real browser --------------------------------------------------------------------------------


def _driver(tmp: Path) -> Any:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            "the browser test needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
            "/usr/bin/chromedriver): scripts/setup-tests.sh installs them as root or with sudo"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _shot(driver: Any, name: str) -> Path:
    """A screenshot of the whole page (the window grown to the page's height)."""
    ARTIFACTS.mkdir(exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# screenshots written by tests/test_ui.py\n*\n")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(700, min(int(height) + 20, 6000)))
    driver.execute_script("window.scrollTo(0, 0)")
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    return path


_A11Y_CHECKS = """
const problems = [];
for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
  if (!el.labels || el.labels.length === 0) problems.push('unlabelled ' + el.name);
}
for (const th of document.querySelectorAll('th')) {
  const scope = th.getAttribute('scope');
  if (scope !== 'col' && scope !== 'row') problems.push('th without scope: ' + th.textContent);
}
for (const t of document.querySelectorAll('table')) {
  if (!t.querySelector('caption')) problems.push('table without caption: ' + t.id);
}
if (document.documentElement.lang !== 'en') problems.push('no lang');
if (document.querySelectorAll('h1').length !== 1) problems.push('not one h1');
return problems;
"""


def test_browser_sign_in_files_live_update_report_and_reject_reason(dash: Dashboard, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _driver(tmp_path)
    shots: dict[str, Path] = {}
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(dash.h.url + "/ui")
        wait.until(ec.url_contains("/ui/login"))
        assert driver.execute_script(_A11Y_CHECKS) == []
        assert driver.switch_to.active_element.get_attribute("id") == "client_id"  # autofocus
        client_id, secret = dash.creds("acme")
        label = driver.find_element(By.CSS_SELECTOR, "label[for=client_id]")
        assert label.text == "Client ID"
        driver.find_element(By.ID, "client_id").send_keys(client_id)
        driver.find_element(By.ID, "client_secret").send_keys(secret)
        shots["login"] = _shot(driver, "ui-login.png")
        driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "tenants")))
        assert urlsplit(driver.current_url).path == "/ui"
        assert driver.execute_script("return document.cookie") == ""  # HttpOnly: not readable by script
        assert "acme" in driver.find_element(By.ID, "tenants").text
        # Keyboard focus is visible: the first Tabs land on the skip link (shown when focused),
        # the home link and the sign-out button, each drawn with an outline.
        outline = "return getComputedStyle(arguments[0]).outlineStyle"
        for expected in ("Skip to content", "dropzone operations", "Sign out"):
            ActionChains(driver).send_keys(Keys.TAB).perform()
            focused = driver.switch_to.active_element
            assert focused.get_attribute("textContent").strip() == expected
            assert focused.is_displayed() and driver.execute_script(outline, focused) != "none"
        shots["tenants"] = _shot(driver, "ui-tenants.png")

        driver.find_element(By.LINK_TEXT, "acme").click()
        wait.until(ec.presence_of_element_located((By.ID, "files")))
        files = driver.find_element(By.ID, "files").text
        assert "patients.ndjson" in files and "mixed.ndjson" in files
        reasons = driver.find_element(By.ID, "reasons").text
        assert "code_not_in_value_set" in reasons and "Patient.gender" in reasons
        assert driver.execute_script(_A11Y_CHECKS) == []
        # A file dropped now appears within a few refreshes, without the page being reloaded.
        driver.execute_script("window.__stillHere = true")
        drop_file(dash.h, "acme", "late.ndjson", _ndjson(_sample("Patient.000.ndjson")[5:8]))
        # The live refresh replaces the table: an element found just before it is stale.
        WebDriverWait(driver, 40, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: "late.ndjson" in d.find_element(By.ID, "files").text
        )
        assert driver.execute_script("return window.__stillHere === true")
        assert "Updated" in driver.find_element(By.ID, "refresh-status").text
        shots["tenant"] = _shot(driver, "ui-tenant.png")

        for attempt in range(3):  # a refresh may swap the table between finding the link and using it
            try:
                link = driver.find_element(
                    By.XPATH,
                    "//table[@id='files']//tr[th/a[normalize-space()='mixed.ndjson']]//a[@class='report-link']",
                )
                assert link.get_attribute("textContent").strip() == "Report of mixed.ndjson"  # hidden part
                link.click()
                break
            except StaleElementReferenceException:
                if attempt == 2:
                    raise
        wait.until(ec.presence_of_element_located((By.ID, "rejected-records")))
        rejected = driver.find_element(By.ID, "rejected-records").text
        assert "code_not_in_value_set" in rejected and "Patient.gender" in rejected
        assert "line 2" in rejected and "invalid_json" in rejected
        assert MARKER not in driver.page_source
        assert driver.execute_script(_A11Y_CHECKS) == []
        shots["report"] = _shot(driver, "ui-report.png")

        driver.find_element(By.CSS_SELECTOR, ".account button[type=submit]").click()
        wait.until(ec.url_contains("/ui/login"))
        driver.get(dash.h.url + "/ui/tenants/acme")
        wait.until(ec.url_contains("/ui/login?next=/ui/tenants/acme"))
    finally:
        driver.quit()
    for path in shots.values():
        assert path.stat().st_size > 10_000
    if os.environ.get("DROPZONE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("tenant", "report"):
            shutil.copyfile(shots[name], SCREENSHOTS / shots[name].name)
