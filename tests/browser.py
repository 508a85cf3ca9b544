"""Headless Chromium for the page tests: find a browser, open a local page, collect what broke.

The browser is Debian's ``chromium`` (scripts/setup.sh installs it), driven by playwright's Python
package with ``executable_path`` (playwright's own browser download is never used). What counts as
broken: a console error or an uncaught page error, an <img> that did not load, a link to a local
file that does not exist, an in-page ``#anchor`` with no element of that id, and any request that
leaves the machine (the pages are self-contained).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """The Chromium executable: $EDGEREP_CHROMIUM, else chromium / chromium-browser on PATH."""
    env = os.environ.get("EDGEREP_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright's Python package is not installed (pip install -e '.[browser]'; scripts/setup.sh does)"
    if find_chromium() is None:
        return ("no Chromium on this machine and none could be installed "
                "(scripts/setup.sh runs `apt-get install chromium` where apt-get exists)")
    return None


@dataclass
class PageCheck:
    """What a page did in the browser."""
    url: str
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    images: int = 0
    links: int = 0
    text: str = ""

    @property
    def problems(self) -> list[str]:
        """Every problem in one list (empty when the page is fine)."""
        return ([f"console: {m}" for m in self.console_errors] + [f"image: {m}" for m in self.broken_images]
                + [f"link: {m}" for m in self.broken_links] + [f"network: {m}" for m in self.external_requests])


_JS_LINKS = """() => Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))"""
_JS_IMAGES = """() => Array.from(document.images).map(i => [i.getAttribute('alt') || i.currentSrc.slice(0, 60),
                                                           i.complete && i.naturalWidth > 0])"""
_JS_IDS = """() => Array.from(document.querySelectorAll('[id]')).map(e => e.id)"""


class Browser:
    """One headless Chromium for several pages (start-up is the slow part)."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._profile = tempfile.mkdtemp(prefix="edgerep-chromium-")
        self._pw = sync_playwright().start()
        self._ctx = self._pw.chromium.launch_persistent_context(
            self._profile, executable_path=find_chromium(), headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})

    def check(self, path: Path, screenshot: Path | None = None) -> PageCheck:
        """Open ``path``, wait for it to load, screenshot the whole page, and report what broke."""
        path = Path(path).resolve()
        res = PageCheck(url=path.as_uri())
        page = self._ctx.new_page()
        page.on("console", lambda m: res.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: res.console_errors.append(str(e)))

        def request(r):
            if not r.url.startswith(("file:", "data:", "about:")):
                res.external_requests.append(r.url)
        page.on("request", request)
        page.goto(res.url, wait_until="load")
        res.title = page.title()
        imgs = page.evaluate(_JS_IMAGES)
        res.images = len(imgs)
        res.broken_images = [str(name) for name, ok in imgs if not ok]
        ids = set(page.evaluate(_JS_IDS))
        hrefs = page.evaluate(_JS_LINKS)
        res.links = len(hrefs)
        for href in hrefs:
            u = urlparse(href)
            if u.scheme in ("http", "https", "mailto"):
                continue  # not followed: the pages must not need the network, but may cite a URL
            if not u.scheme and not u.path and u.fragment:
                if u.fragment not in ids:
                    res.broken_links.append(href)
                continue
            target = (path.parent / unquote(u.path)).resolve() if u.scheme in ("", "file") else None
            if target is None or not target.exists():
                res.broken_links.append(href)
        res.text = page.inner_text("body")
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        page.close()
        return res

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        try:
            self._ctx.close()
            self._pw.stop()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)
