"""The report in a real browser: headless Chromium loads the HTML without console errors and every image renders.

Needs Chromium (Debian: ``apt-get install -y chromium``; CI installs it). The page is copied and a small checker
script appended to the copy (the report itself has no scripts): on load it writes, into the DOM, how many images
there are, which have ``naturalWidth == 0``, and any JavaScript errors; ``--dump-dom`` prints the DOM and
``--enable-logging=stderr`` prints console messages as ``CONSOLE`` lines. A screenshot is taken as well (kept in
the test's temporary folder) and checked to be more than a blank page.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report_fixtures import write_fake_home  # noqa: E402

from normlab.lab.report import write_report  # noqa: E402

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y "
                                                             "chromium; the CI set-up installs it)")

_CHECKER = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message || e)); }, true);
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt; });
  var out = document.createElement("pre");
  out.id = "normlab-check";
  out.textContent = JSON.stringify({images: images.length, broken: broken, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""
_FLAGS = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--virtual-time-budget=10000"]


def browser_check(report_html: Path, workdir: Path) -> tuple[dict, list[str], Path]:
    """Open ``report_html`` in headless Chromium: ``(checker result, console lines, screenshot path)``."""
    page = workdir / "check.html"
    page.write_text(report_html.read_text(encoding="utf-8").replace("</body>", _CHECKER + "</body>"),
                    encoding="utf-8")
    dump = subprocess.run([CHROMIUM, *_FLAGS, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="normlab-check">(.*?)</pre>', dump.stdout, re.S)
    assert found, f"the checker did not run; chromium said: {dump.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    console = [line for line in dump.stderr.splitlines() if "CONSOLE" in line]
    shot = workdir / "screenshot.png"
    subprocess.run([CHROMIUM, *_FLAGS, "--window-size=1280,2400", f"--screenshot={shot}", report_html.as_uri()],
                   capture_output=True, timeout=120)
    return result, console, shot


@needs_chromium
def test_report_loads_without_console_errors_and_every_image_renders(tmp_path):
    files = write_report(write_fake_home(tmp_path / "home"))
    result, console, shot = browser_check(files.html, tmp_path)
    assert result["images"] == 4 and result["broken"] == [] and result["errors"] == []
    assert console == []
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] > 1000 and pixels[..., :3].std() > 0.05  # a rendered page, not a blank one
