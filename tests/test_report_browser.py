"""The report in a real browser: headless Chromium loads report.html, every image loads, nothing
overflows the page sideways and no figure is shrunk to illegibility (skipped without Chromium)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from semantic_stores import make_tinysol_store

from analyses.report import ReportOptions, build_report

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")

# Runs after every image has loaded; reports into a hidden element that --dump-dom prints.
CHECK = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const root = document.documentElement;
  const result = {
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    shrink: Math.min(1, ...images.map(i => i.clientWidth / Math.max(i.naturalWidth, 1))),
    linked: images.filter(i => i.parentElement.tagName === 'A' &&
                               i.parentElement.getAttribute('href') === i.getAttribute('src')).length,
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
    // cells laid out on more lines than their kind allows: names and numbers on one line,
    // sentences no narrower than 15em (a narrow window scrolls the table instead)
    wrapped: [...document.querySelectorAll('td')].filter(td => {
      const range = document.createRange(); range.selectNodeContents(td);
      const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
      const em = parseFloat(getComputedStyle(td).fontSize);
      return td.classList.contains('text') ? td.clientWidth < 15 * em
                                            : tops.size > (td.querySelector('br') ? 2 : 1);
    }).map(td => td.textContent),
  };
  const out = document.createElement('pre');
  out.id = 'check'; out.style.display = 'none'; out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def browser_check(page, width: int, tmp_path) -> dict:
    probe = page.with_name("check.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               f"--user-data-dir={tmp_path / f'profile-{width}'}", f"--window-size={width},900",
               "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="check"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found, f"no check result from Chromium: {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_report_renders_in_headless_chromium(tmp_path):
    clap = make_tinysol_store(tmp_path / "clap.h5", model="toy_clap", seed=0)
    other = make_tinysol_store(tmp_path / "other.h5", model="toy_muscall", seed=1)
    out = tmp_path / "rep"
    report = build_report([clap, other], out, ReportOptions(bootstrap=20))
    page = out / "report.html"
    for width in (1280, 760, 390):
        result = browser_check(page, width, tmp_path)
        assert result["wrapped"] == [], f"cells squeezed at {width} px: {result['wrapped'][:5]}"
        assert result["images"] == len(report["figures"]) >= 8
        assert result["broken"] == []
        assert result["linked"] == result["images"]  # click to enlarge
        assert result["scrollWidth"] <= result["clientWidth"], f"horizontal overflow at {width} px"
        if width == 1280:
            # At a desktop width no figure is shown below 3/4 of its drawn size.
            assert result["shrink"] >= 0.75, result
