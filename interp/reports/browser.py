"""Open a report in headless Chromium: did every figure render, were there JavaScript errors?

The report's own scripts record, after load, ``data-figures`` (plotly divs),
``data-figures-rendered`` (divs holding a rendered ``svg.main-svg``) and ``data-js-errors``
(everything caught by ``window.onerror``/``unhandledrejection``) on ``<body>``;
:func:`check_rendering` reads them back from Chromium's ``--dump-dom`` output and can take a
screenshot. Chromium runs offline (no network flags) with a throw-away profile.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars", "--mute-audio")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary (``$INTERP_CHROMIUM`` first), or ``None``."""
    env = os.environ.get("INTERP_CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


@dataclass
class RenderCheck:
    """What a browser saw: figure counts, JavaScript errors, the screenshot path."""

    figures: int
    rendered: int
    js_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    dom: str = ""

    @property
    def ok(self) -> bool:
        return self.figures == self.rendered and not self.js_errors


def _run(chrome: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="interp-chromium-") as profile:
        return subprocess.run([chrome, *_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def check_rendering(html_path: str | Path, *, screenshot: str | Path | None = None,
                    window: tuple[int, int] = (1280, 4000), budget_ms: int = 15000,
                    timeout: float = 180.0) -> RenderCheck:
    """Load ``html_path`` in headless Chromium and report what rendered.

    Raises ``FileNotFoundError`` when no Chromium is installed (install Debian's ``chromium``)
    and ``RuntimeError`` when the page was not the report (the render check never ran).
    """
    chrome = find_chromium()
    if chrome is None:
        raise FileNotFoundError("no Chromium found; install it (Debian: apt-get install -y chromium) "
                                "or set INTERP_CHROMIUM to its path")
    url = Path(html_path).resolve().as_uri()
    res = _run(chrome, [f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout)
    dom = res.stdout
    m = re.search(r"<body([^>]*)>", dom)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1))) if m else {}
    if "data-figures" not in attrs:
        raise RuntimeError(f"the render check did not run in {html_path} (exit {res.returncode}); "
                           f"stderr: {res.stderr.strip()[-300:]}")
    errors = json.loads(html_lib.unescape(attrs.get("data-js-errors", "[]")))
    shot: Path | None = None
    if screenshot is not None:
        shot = Path(screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        _run(chrome, [f"--virtual-time-budget={budget_ms}", f"--window-size={window[0]},{window[1]}",
                      f"--screenshot={shot}", url], timeout)
        if not shot.exists():
            shot = None
    return RenderCheck(figures=int(attrs["data-figures"]), rendered=int(attrs.get("data-figures-rendered", 0)),
                       js_errors=list(errors), screenshot=shot, dom=dom)
