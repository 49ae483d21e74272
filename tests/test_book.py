"""The website: builds without execution and without warnings, has no broken internal
links, and every page in _toc.yml, opened in headless Chromium with the network off,
reads as a guide: math rendered by the site's own MathJax (no raw TeX), every image
loaded, circuitsvis widgets where the notebook has them, the setup and parameters cells
folded, no Python traceback, code kept inside the column. A screenshot of each page is
saved under _build/screenshots/.

The site is built from the papermill-executed notebooks in _build/executed/ when every
ready chapter has one (after `python -m utils.course run`), else from the committed
notebooks (no outputs; CI) with one chapter (RENDER_CHAPTER) executed here in the smoke
profile, so that the site test always sees real outputs: its verdict table must be an HTML
<table> with the rows the run produced, and no page may show raw Markdown table text.
COURSE_SITE_EXECUTED=1 requires the executed ones, =0 forces the committed ones (and the one
smoke execution).
"""
import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest
import yaml

from utils.course import REPO_ROOT
from utils.course.book import build
from utils.course.chapters import ready_chapters
from utils.course.check import _toc_files
from utils.course.notebooks import FOLD_CAPTIONS, has_exercise
from utils.course.setup_cell import repository

SCREENSHOTS = REPO_ROOT / "_build" / "screenshots"
EXECUTED = REPO_ROOT / "_build" / "executed"
RENDER_CHAPTER = "00_orientation"   # executed in smoke for the site when the others are not


def _use_executed() -> bool:
    want = os.environ.get("COURSE_SITE_EXECUTED", "")
    have = all((EXECUTED / f"{c.id}.ipynb").exists() for c in ready_chapters())
    if want == "1" and not have:
        pytest.fail("COURSE_SITE_EXECUTED=1 but _build/executed/ lacks a chapter: run `python -m utils.course run` first")
    return have and want != "0"


def _one_chapter_executed(tmp: Path) -> Path:
    """A folder of notebooks for the build: RENDER_CHAPTER executed now in the smoke profile
    (papermill, as `python -m utils.course run` does), every other chapter as committed."""
    from utils.course.run import run_notebook
    folder = tmp / "executed"
    folder.mkdir()
    for ch in ready_chapters():
        if ch.id != RENDER_CHAPTER:
            shutil.copy2(REPO_ROOT / "solutions" / f"{ch.id}.ipynb", folder / f"{ch.id}.ipynb")
    result = run_notebook(REPO_ROOT / "solutions" / f"{RENDER_CHAPTER}.ipynb", folder / f"{RENDER_CHAPTER}.ipynb",
                          "smoke", RENDER_CHAPTER, timeout=600)
    assert result.status == "ok", f"{RENDER_CHAPTER} failed in the smoke profile: {result.error}"
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("site")
    if _use_executed():
        index = build(REPO_ROOT, build_dir=build_dir, executed=True, executed_dir=EXECUTED)
    else:
        folder = _one_chapter_executed(build_dir)
        index = build(REPO_ROOT, build_dir=build_dir, executed=True, executed_dir=folder)
    return index.parent


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v:
                self.links.append(v)


def test_every_page_is_built(site):
    for page in ["index.html", "book/setup.html", "book/curriculum.html", "book/references.html",
                 *[f"book/chapters/{c.id}.html" for c in ready_chapters()], *[f"solutions/{c.id}.html" for c in ready_chapters()]]:
        assert (site / page).exists(), page


def test_no_broken_internal_links(site):
    broken = []
    for page in site.rglob("*.html"):
        if "_static" in page.parts:  # theme templates, not pages
            continue
        parser = _Links()
        parser.feed(page.read_text(errors="replace"))
        for link in parser.links:
            u = urlparse(link)
            if u.scheme or link.startswith(("#", "//", "mailto:", "javascript:", "data:")):
                continue
            target = (page.parent / unquote(u.path)).resolve()
            if u.path and not target.exists():
                broken.append(f"{page.relative_to(site)} -> {link}")
    assert not broken, "\n".join(broken[:20])


def test_chapter_pages_link_to_colab(site):
    url, branch = repository()
    repo = url.removeprefix("https://github.com/")
    for ch in ready_chapters():
        html = (site / "book" / "chapters" / f"{ch.id}.html").read_text()
        for folder in ("notebooks", "solutions"):
            assert f"https://colab.research.google.com/github/{repo}/blob/{branch}/{folder}/{ch.id}.ipynb" in html
        assert f"../../solutions/{ch.id}.html" in html  # the solution notebook's page on the site


def test_every_page_shows_the_licence(site):
    from utils.course.book import licence_footer

    pages = [p for p in site.rglob("*.html") if "_static" not in p.parts
             and 'http-equiv="Refresh"' not in p.read_text(errors="replace")[:200]]   # index.html redirects
    missing = [str(p.relative_to(site)) for p in pages if "course-licence" not in p.read_text(errors="replace")]
    assert len(pages) > 20 and not missing, f"pages without the licence footer: {missing[:10]}"
    intro = (site / "book" / "intro.html").read_text()
    assert "CC BY 4.0" in licence_footer() and "MIT License</a>" in intro and "LICENSE-CONTENT" in intro


def test_chapter_pages_state_the_gpu_profile_estimate(site):
    for ch in ready_chapters():
        html = (site / "book" / "chapters" / f"{ch.id}.html").read_text()
        assert 'class="gpu-profile-estimate"' in html and "estimated (not yet measured on a GPU)" in html, ch.id


def test_bibliography_renders(site):
    html = (site / "book" / "references.html").read_text().lower()
    assert "concrete open problems" in html and "transformerlens" in html


def test_mathjax_is_served_by_the_site(site):
    """No page loads MathJax (or any script or style) from a CDN: the site's own copy."""
    remote = []
    for page in site.rglob("*.html"):
        if "_static" in page.parts:
            continue
        for tag in re.findall(r"<(?:script|link)\b[^>]*>", page.read_text(errors="replace")):
            if re.search(r'(?:src|href)="(?:https?:)?//', tag) and not re.search(r'rel="(?:canonical|prev|next)"', tag):
                remote.append(f"{page.relative_to(site)}: {tag}")
    assert not remote, "\n".join(remote[:20])
    assert (site / "_static" / "mathjax" / "tex-mml-chtml.js").stat().st_size > 500_000
    assert list((site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    with_math = [p for p in site.rglob("*.html") if "_static" not in p.parts and 'class="math' in p.read_text()]
    assert with_math, "no page has math: the offline MathJax check has nothing to check"
    for page in with_math:
        assert re.search(r'<script[^>]+src="(\.\./)*_static/mathjax/tex-mml-chtml\.js', page.read_text()), page


# ---------------------------------------------------------------------------------------
# Headless Chromium, driven over the DevTools protocol on a pipe (no extra packages).

def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is not installed: `apt-get install chromium` (.ci/run does this)")
    return exe


class Browser:
    """One headless Chromium with the network off; `open(url)` loads a page and waits for
    MathJax and circuitsvis to finish; `js(expr)` evaluates in it; `screenshot(path)`."""

    def __init__(self, exe, width=1280, height=1400):
        self._profile = tempfile.TemporaryDirectory()
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4: move them above 10 first
        # so placing them at 3 and 4 in the child cannot clobber one another
        hi = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
        for fd in (to_child_r, from_child_w):
            os.close(fd)

        def child_fds():
            os.dup2(hi[0], 3)
            os.dup2(hi[1], 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             "--remote-debugging-pipe", "--allow-file-access-from-files", f"--user-data-dir={self._profile.name}",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4, *hi), preexec_fn=child_fds)
        for fd in hi:
            os.close(fd)
        self._buf, self._id, self.events = b"", 0, []
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable")
        self.call("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                       "uploadThroughput": -1})
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})

    def _read_message(self, deadline):
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def _send(self, method, params=None, session=None, timeout=60):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def call(self, method, params=None, timeout=60):
        return self._send(method, params, self.session, timeout)

    def js(self, expression, timeout=60):
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                        timeout)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def open(self, url, settle_ms=20_000):
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read_message(deadline))
        # MathJax typesets after load; circuitsvis widgets render from inline module scripts
        self.js(_SETTLE.replace("SETTLE_MS", str(settle_ms)), timeout=settle_ms / 1000 + 30)

    def screenshot(self, path: Path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        self.proc.kill()
        self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        # Chromium's helper processes may still be writing the profile for a moment after the
        # browser exits: retry, then leave the temporary directory rather than fail a test
        for _ in range(10):
            try:
                self._profile.cleanup()
                return
            except OSError:
                time.sleep(0.5)
        shutil.rmtree(self._profile.name, ignore_errors=True)


_SETTLE = """(async () => {
  const t0 = Date.now(), sleep = ms => new Promise(r => setTimeout(r, ms));
  const math = () => document.querySelectorAll('span.math, div.math').length;
  while (Date.now() - t0 < SETTLE_MS) {
    const mj = window.MathJax, typeset = !math() || (mj && mj.startup && mj.startup.promise);
    const widgets = [...document.querySelectorAll('[id^="circuits-vis-"]')];
    if (typeset && widgets.every(w => w.childElementCount > 0)) {
      if (math()) await mj.startup.promise;
      break;
    }
    await sleep(100);
  }
  await sleep(200);
  return true;
})()"""

# Everything a page is checked for, measured in the page.
_MEASURE = r"""(() => {
  const article = document.querySelector('article.bd-article') || document.body;
  const prose = article.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
  const text = prose.textContent;
  // checkVisibility is false inside a closed <details>, where getClientRects still reports boxes
  const visible = e => e.checkVisibility ? e.checkVisibility() : e.getClientRects().length > 0;
  const folded = [...article.querySelectorAll('details.hide.above-input')].map(d => {
    const title = d.querySelector('summary p.collapsed');
    const h = title ? title.getBoundingClientRect().height : 0;
    const lh = title ? parseFloat(getComputedStyle(title).lineHeight) || 24 : 0;
    return {caption: title ? title.textContent.trim() : '', open: d.open,
            codeVisible: [...d.querySelectorAll('pre')].some(visible), oneLine: h > 0 && h < 1.6 * lh};
  });
  const hints = [...article.querySelectorAll('details.exercise-hint')].map(d => ({
    summary: d.querySelector('summary').textContent.trim(), open: d.open,
    bodyVisible: [...d.children].filter(c => c.tagName !== 'SUMMARY').some(visible)}));
  const setupVisible = [...article.querySelectorAll('pre')].some(p => p.textContent.includes('def course_setup(') && visible(p));
  const codeCut = [...article.querySelectorAll('div.cell_input pre, div.highlight pre')].filter(p => visible(p)
      && p.scrollWidth > p.clientWidth + 1).map(p => p.textContent.split('\n').find(l => l.length > 80) || p.textContent.slice(0, 80));
  return {
    rawTex: (text.match(/\\\(|\\\)|\\\[|\\\]|\$\$/g) || []).length,
    rawTexSample: (text.match(/.{0,40}(\\\(|\\\[|\$\$).{0,40}/) || [''])[0],
    mathNodes: article.querySelectorAll('span.math, div.math').length,
    mjx: article.querySelectorAll('mjx-container').length,
    imgs: document.images.length,
    brokenImgs: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    widgets: article.querySelectorAll('[id^="circuits-vis-"]').length,
    widgetsRendered: [...article.querySelectorAll('[id^="circuits-vis-"]')].filter(w => w.childElementCount > 0).length,
    tracebacks: [...article.querySelectorAll('.cell_output')].filter(o => o.querySelector('.traceback, .error')
                  || o.textContent.includes('Traceback (most recent call last)')).length
                + (text.includes('An Exception was encountered at') ? 1 : 0),  // papermill's banner
    folded, hints, setupVisible, codeCut,
    rawTables: (text.match(/\|\s*:?-{3,}:?\s*\|/g) || []).length,
    rawTableSample: (text.match(/.{0,60}\|\s*:?-{3,}:?\s*\|.{0,20}/) || [''])[0],
    verdictTables: [...article.querySelectorAll('table.verdict-table')].map(t => ({
      headers: [...t.querySelectorAll('thead th')].map(th => th.textContent.trim()),
      claims: [...t.querySelectorAll('tbody tr')].map(tr => tr.querySelector('td').textContent.trim()),
      verdicts: [...t.querySelectorAll('tbody tr')].map(tr => tr.lastElementChild.textContent.trim())})),
    sidebar: !!document.querySelector('.bd-sidebar-primary, #pst-primary-sidebar'),
    title: document.title,
  };
})()"""


def toc_pages(root: Path = REPO_ROOT) -> list[str]:
    """Every page in _toc.yml, as its path in the built site."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return [f"{f}.html" for f in _toc_files(toc)]


def _widgets_in_notebook(site: Path, page: str) -> int:
    """How many circuitsvis widgets the executed notebook behind a page has in its outputs."""
    nb_path = site.parent / "site_src" / page.replace(".html", ".ipynb")
    if not nb_path.exists():
        return 0
    nb = nbformat.read(nb_path, as_version=4)
    html = [o.get("data", {}).get("text/html", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return sum(len(re.findall(r'id="circuits-vis-', "".join(h) if isinstance(h, list) else h)) for h in html)


def _exercises_in_notebook(site: Path, page: str) -> int:
    """How many exercise cells the notebook behind a page has."""
    nb_path = site.parent / "site_src" / page.replace(".html", ".ipynb")
    if not nb_path.exists():
        return 0
    nb = nbformat.read(nb_path, as_version=4)
    return sum(c.cell_type == "code" and has_exercise(c.source) for c in nb.cells)


def check_page(browser: Browser, site: Path, page: str) -> tuple[dict, list[str]]:
    """Open one page, save its screenshot, and return (measurements, problems)."""
    browser.open((site / page).as_uri())
    m = browser.js(_MEASURE)
    shot = SCREENSHOTS / (page.removesuffix(".html").replace("/", "__") + ".png")
    browser.screenshot(shot)
    if m["mathNodes"]:  # and one scrolled to the first equation, to see it rendered
        browser.js("document.querySelector('span.math, div.math').scrollIntoView({block: 'center'})")
        browser.screenshot(shot.with_name(shot.stem + "__math.png"))
        browser.js("window.scrollTo(0, 0)")
    external = sorted({e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"
                       and not e["params"]["request"]["url"].startswith(("file:", "data:", "blob:", "about:"))})
    failed = sorted({e["params"].get("errorText", "") + " " + str(e["params"].get("requestId")) for e in browser.events
                     if e.get("method") == "Network.loadingFailed" and not e["params"].get("canceled")})
    problems = []
    if not shot.exists() or shot.stat().st_size < 20_000:
        problems.append("no screenshot (or a blank one)")
    if m["rawTex"]:
        problems.append(f"{m['rawTex']} raw TeX delimiters in the rendered text, e.g. {m['rawTexSample']!r}")
    if m["mathNodes"] and m["mjx"] < m["mathNodes"]:
        problems.append(f"MathJax rendered {m['mjx']} of {m['mathNodes']} math elements")
    if m["brokenImgs"]:
        problems.append(f"{len(m['brokenImgs'])} of {m['imgs']} images not loaded: {m['brokenImgs'][:3]}")
    expected_widgets = _widgets_in_notebook(site, page)
    if m["widgets"] != expected_widgets or m["widgetsRendered"] != m["widgets"]:
        problems.append(f"circuitsvis: notebook has {expected_widgets}, page has {m['widgets']}, "
                        f"{m['widgetsRendered']} rendered")
    if m["tracebacks"]:
        problems.append(f"{m['tracebacks']} Python traceback(s) in the outputs")
    if m["rawTables"]:
        problems.append(f"raw Markdown table text on the page (not rendered as a table), e.g. {m['rawTableSample']!r}")
    if page.startswith("solutions/"):
        setup_caption = FOLD_CAPTIONS["setup"]
        setup = [f for f in m["folded"] if f["caption"].startswith(setup_caption)]
        if not setup or setup[0]["open"] or setup[0]["codeVisible"] or m["setupVisible"]:
            problems.append(f"the setup cell is not folded (folded cells: {m['folded']})")
        if not any(f["caption"].startswith(FOLD_CAPTIONS["parameters"]) and not f["codeVisible"] for f in m["folded"]):
            problems.append("the parameters cell is not folded")
        n_exercises = _exercises_in_notebook(site, page)
        solutions = [f for f in m["folded"] if f["caption"].startswith("Solution:")]
        if len(solutions) != n_exercises or any(f["open"] or f["codeVisible"] for f in solutions):
            problems.append(f"{n_exercises} exercises but {len(solutions)} folded solution cells: {solutions[:2]}")
        first = [h for h in m["hints"] if h["summary"].startswith("Hint 1")]
        if len(first) < n_exercises or any(h["open"] or h["bodyVisible"] for h in m["hints"]):
            problems.append(f"{n_exercises} exercises but {len(first)} folded first hints: {m['hints'][:2]}")
        if not all(f["oneLine"] for f in m["folded"]):
            problems.append(f"a folded cell's caption is not one line: {m['folded']}")
    if m["codeCut"]:
        problems.append(f"{len(m['codeCut'])} code blocks cut at the column's edge, e.g. {m['codeCut'][0]!r}")
    if not m["sidebar"]:
        problems.append("the book theme's sidebar is missing")
    if external:
        problems.append(f"requests beyond the site (offline they fail): {external[:3]}")
    if failed:
        problems.append(f"{len(failed)} resources failed to load")
    return m, problems


@pytest.fixture(scope="module")
def browser():
    b = Browser(_chromium())
    yield b
    b.close()


def test_every_page_in_headless_chromium(site, browser):
    """Every page in _toc.yml, offline: math rendered, images loaded, widgets present,
    plumbing folded, no traceback, code inside the column; a screenshot of each."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = toc_pages()
    assert len(pages) >= 4 + 2 * len(ready_chapters()), pages
    report, failures = [], []
    for page in pages:
        m, problems = check_page(browser, site, page)
        report.append({"page": page, "screenshot": str(SCREENSHOTS / (page.removesuffix(".html").replace("/", "__") + ".png")),
                       "math": f"{m['mjx']}/{m['mathNodes']}", "images": m["imgs"], "widgets": m["widgets"],
                       "folded": len(m["folded"]), "problems": problems})
        failures += [f"{page}: {p}" for p in problems]
    (SCREENSHOTS / "report.json").write_text(json.dumps({"executed": _use_executed(), "pages": report}, indent=1))
    source = ("the executed notebooks in _build/executed/ (COURSE_SITE_EXECUTED=0: the committed ones)"
              if _use_executed() else "the committed notebooks")
    assert not failures, f"site built from {source}; report in {SCREENSHOTS / 'report.json'}\n" + "\n".join(failures)


def test_chapter_page_in_headless_chromium(site, browser):
    ch = ready_chapters()[0]
    browser.open((site / "book" / "chapters" / f"{ch.id}.html").as_uri())
    dom = browser.js("document.documentElement.outerHTML")
    assert re.search(r'<a[^>]+href="https://colab\.research\.google\.com/github/[^"]+/notebooks/' + ch.id, dom)
    assert "Open the exercises in Colab" in dom and "Open the solutions in Colab" in dom
    assert ch.title.split(":")[0] in dom and "What you will do" in dom
    assert "sidebar" in dom  # the book theme rendered around the content


def _verdict_rows_in_notebook(nb_path: Path) -> list[tuple[str, str]]:
    """(claim, verdict) of every row of the verdict tables in an executed notebook's outputs."""
    nb = nbformat.read(nb_path, as_version=4)
    rows = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            h = out.get("data", {}).get("text/html", "")
            h = "".join(h) if isinstance(h, list) else h
            if 'class="verdict-table"' in h:
                for tr in re.findall(r"<tr>(<td>.*?)</tr>", h):
                    cells = [html_unescape(c) for c in re.findall(r"<td>(.*?)</td>", tr)]
                    rows.append((cells[0], cells[-1]))
    return rows


def test_verdict_table_renders_from_an_executed_run(site, browser):
    """The executed chapter's verdict table is a real <table> on its page, with the rows the run
    produced (claims and verdicts), and the page shows no raw '| --- |' text."""
    nb_path = site.parent / "site_src" / "solutions" / f"{RENDER_CHAPTER}.ipynb"
    expected = _verdict_rows_in_notebook(nb_path)
    assert len(expected) >= 3, f"the executed {RENDER_CHAPTER} should display a verdict table, found {expected}"
    browser.open((site / "solutions" / f"{RENDER_CHAPTER}.html").as_uri())
    m = browser.js(_MEASURE)
    assert m["rawTables"] == 0, m["rawTableSample"]
    tables = m["verdictTables"]
    assert len(tables) == 1, f"expected one verdict table on the page, found {len(tables)}"
    assert tables[0]["headers"][0] == "claim" and tables[0]["headers"][-1] == "verdict", tables[0]["headers"]
    assert list(zip(tables[0]["claims"], tables[0]["verdicts"])) == expected
