"""The website: builds without execution and without warnings, has no broken internal
links, and a chapter page opened in headless Chromium shows its Colab links and content."""
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from urllib.parse import unquote, urlparse

import pytest

from utils.course import REPO_ROOT
from utils.course.book import build
from utils.course.chapters import ready_chapters
from utils.course.setup_cell import repository

SCREENSHOTS = REPO_ROOT / "_build" / "screenshots"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    index = build(REPO_ROOT, build_dir=tmp_path_factory.mktemp("site"), executed=False)
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


def test_bibliography_renders(site):
    html = (site / "book" / "references.html").read_text().lower()
    assert "concrete open problems" in html and "transformerlens" in html


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is not installed: `apt-get install chromium` (.ci/run does this)")
    return exe


def _headless(exe, *args, timeout=90):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--hide-scrollbars", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def test_chapter_page_in_headless_chromium(site):
    exe = _chromium()
    ch = ready_chapters()[0]
    page = (site / "book" / "chapters" / f"{ch.id}.html").as_uri()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{ch.id}.png"
    shot.unlink(missing_ok=True)
    _headless(exe, f"--screenshot={shot}", "--window-size=1280,1400", page)
    assert shot.exists() and shot.stat().st_size > 20_000, "Chromium did not save a screenshot of the chapter page"
    dom = _headless(exe, "--dump-dom", page).stdout
    assert re.search(r'<a[^>]+href="https://colab\.research\.google\.com/github/[^"]+/notebooks/' + ch.id, dom)
    assert "Open the exercises in Colab" in dom and "Open the solutions in Colab" in dom
    assert ch.title.split(":")[0] in dom and "What you will do" in dom
    assert "sidebar" in dom  # the book theme rendered around the content
