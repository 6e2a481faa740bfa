"""Both reports in a real browser: headless Chromium (Debian's `chromium`, installed here if missing) loads the
tiny experiment's summary.html and Snakemake's report.html, and each must load without a script error and show
its tables and every figure (each <img> decoded to a non-zero size; in report.html each figure opened through the
report app itself).

A small script is appended to a copy of each page: on load it records script errors and, per image, whether it
decoded; `--dump-dom` then prints the page as the browser built it, and the test reads the record from it.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from helpers import snakemake

pytestmark = pytest.mark.env

# The error listener goes first in <head>, so that an error in any of the page's scripts is seen; the record is
# written after load. Only the page's own last </body> is touched: libraries inlined in a page (Snakemake's report
# inlines vega, React, ...) hold "</body>" inside their string literals.
LISTEN = "<script>window.__errors = []; window.addEventListener('error', e => window.__errors.push(String(e.message || e)));</script>"
PROBE = """
<script>
window.addEventListener('load', () => setTimeout(() => {
  const imgs = [...document.images];
  const d = document.createElement('pre');
  d.id = 'grape-probe';
  d.textContent = JSON.stringify({errors: window.__errors, images: imgs.length,
    decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    tables: document.querySelectorAll('table').length});
  document.body.appendChild(d);
}, 1500));
</script>
"""


# Snakemake's report is a React app: a figure is shown only when its result is opened. This probe opens every image
# result the way the app's view button does (`app.setView({content: "img", contentPath: data_uri})`, `app` being the
# report's own global), lets React render it, and records whether the <img> the app rendered decoded.
REPORT_PROBE = """
<script>
window.addEventListener('load', () => setTimeout(async () => {
  const wait = ms => new Promise(r => setTimeout(r, ms));
  const figures = Object.entries(results).filter(([, r]) => (r.mime_type || '').startsWith('image/'));
  const shown = [], failed = [];
  for (const [path, r] of figures) {
    app.setView({content: 'img', contentPath: r.data_uri, resultPath: path});
    await wait(300);
    const img = [...document.querySelectorAll('#app img')].find(i => i.getAttribute('src') === r.data_uri);
    (img && img.complete && img.naturalWidth > 0 ? shown : failed).push(r.name);
  }
  const d = document.createElement('pre');
  d.id = 'grape-probe';
  d.textContent = JSON.stringify({errors: window.__errors, figures: figures.length, shown, failed,
    results: Object.keys(results).length});
  document.body.appendChild(d);
}, 1500));
</script>
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    pytest.skip("no chromium on PATH: `make test` installs Debian's package (make browser)")


def _render(browser: str, page, tmp_path, probe_script: str = PROBE) -> dict:
    import json

    probe = tmp_path / f"probed-{page.name}"
    text = page.read_text()
    head = text.find("<head>")
    text = text[: head + 6] + LISTEN + text[head + 6 :] if head >= 0 else LISTEN + text
    end = text.rfind("</body>")
    probe.write_text(text[:end] + probe_script + text[end:] if end >= 0 else text + probe_script)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--virtual-time-budget=15000", "--dump-dom", probe.resolve().as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r'<pre id="grape-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"{page}: the page never finished loading; stderr: {proc.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(found.group(1))), proc.stdout


def test_summary_and_snakemake_report_render_in_chromium(tiny_run, tmp_path):
    browser = _chromium()
    workdir, results = tiny_run
    summary, dom = _render(browser, results / "report" / "summary.html", tmp_path)
    assert summary["errors"] == [], summary
    assert summary["tables"] >= 8 and summary["images"] >= 5
    assert summary["decoded"] == summary["images"], summary  # every figure shows
    assert "Paired differences" in dom and "grape" in dom
    out = tmp_path / "report.html"
    proc = snakemake(workdir, "--config", "experiment=tiny", "--report", str(out), timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report, dom = _render(browser, out, tmp_path, REPORT_PROBE)
    assert report["errors"] == [], report
    for caption in ("Results", "Selection", "Scoring", "Training", "Cost"):  # the report's categories, rendered
        assert caption in dom, caption
    assert report["figures"] >= 5 and report["failed"] == [], report  # every figure opens and decodes in the app
    assert {"accuracy.svg", "paired.svg", "loss.svg"} <= set(report["shown"]), report
