#!/usr/bin/env python3
"""The HTML report in headless Chromium: builds a report from real `xdrec eval` output (a ranking run with
several seeds and an MMR grid on synthetic data; a rating run on MovieLens 100k when ../shared has it), opens
it, and checks that the page logs no error, that every chart has data points drawn, and saves a screenshot.

Usage: report_browser_test.py XDREC [SCREENSHOT.png]    exit 0 passed, 1 failed, 77 Chromium not installed
"""
import base64
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serve"))
from browser_test import WebDriver, WebDriverError, find_tool, free_port, http, wait_for  # noqa: E402


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    xdrec = sys.argv[1]
    shot = sys.argv[2] if len(sys.argv) > 2 else None
    chromedriver = find_tool("XDREC_CHROMEDRIVER", ["chromedriver"], ["/usr/bin/chromedriver"])
    chromium = find_tool("XDREC_CHROMIUM", ["chromium", "chromium-browser"], ["/usr/bin/chromium"])
    if not chromedriver or not chromium:
        print("skipped: chromium and chromium-driver are not installed (scripts/setup installs them)")
        return 77
    tmp = tempfile.mkdtemp(prefix="xdrec-report-test-")
    shot = shot or os.path.join(tmp, "report.png")
    ml = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "movielens_ml-100k")
    inputs = []

    def run(args):
        r = subprocess.run([xdrec] + args, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"FAIL: xdrec {' '.join(args)}:\n{r.stdout}\n{r.stderr}")

    run(["eval", "synthetic:users=600,items=150", "-m", "popular", "-m", "ials", "-m", "cfgan:epochs=5,hidden=32",
         "--seeds", "2",
         "--diversity", "0.3,0.7", "--quiet", "-o", os.path.join(tmp, "rank.json")])
    inputs.append(os.path.join(tmp, "rank.json"))
    want = {"per-domain", "per-cohort", "accuracy-diversity", "long-tail", "training-curves"}
    if os.path.exists(os.path.join(ml, "u.data")):
        run(["eval", ml, "--task", "rating", "-m", "svd", "--quiet", "-o", os.path.join(tmp, "rating.json")])
        inputs.append(os.path.join(tmp, "rating.json"))
        want |= {"rating-scatter", "rating-error"}
    html = os.path.join(tmp, "report.html")
    run(["report"] + inputs + ["-o", html])

    port = free_port()
    logf = open(os.path.join(tmp, "chromedriver.log"), "w")
    driver = subprocess.Popen([chromedriver, f"--port={port}"], stdout=logf, stderr=subprocess.STDOUT)
    wd = WebDriver(f"http://127.0.0.1:{port}")
    failures = []
    try:
        wait_for("chromedriver", lambda: _ready(wd), timeout=30)
        wd.start(chromium, os.path.join(tmp, "profile"))
        wd.get("file://" + html)
        charts = wd.js("""return Array.from(document.querySelectorAll('figure.chart')).map(f => ({
            name: f.dataset.chart, points: parseInt(f.dataset.points, 10),
            drawn: f.querySelectorAll('svg .point, svg .bar').length,
            width: f.querySelector('svg').getBoundingClientRect().width}));""")
        names = {c["name"] for c in charts}
        if not want <= names:
            failures.append(f"charts missing: {sorted(want - names)} (have {sorted(names)})")
        for c in charts:
            if c["points"] <= 0 or c["drawn"] <= 0 or c["width"] <= 0:
                failures.append(f"chart {c['name']} has no data drawn: {c}")
        errors = [e for e in (wd.browser_log() or []) if e.get("level") == "SEVERE"]
        if errors:
            failures.append(f"console errors: {errors}")
        png = base64.b64decode(wd._call("GET", f"/session/{wd.sid}/screenshot"))
        with open(shot, "wb") as f:
            f.write(png)
        if len(png) < 10000:
            failures.append(f"screenshot is only {len(png)} bytes")
        print(f"report: {len(charts)} charts ({', '.join(sorted(names))}), screenshot {shot} ({len(png)} bytes)")
    except WebDriverError as e:
        failures.append(f"WebDriver: {e}")
    finally:
        try:
            wd.quit()
        except Exception:
            pass
        driver.terminate()
        driver.wait(timeout=15)
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


def _ready(wd):
    try:
        st, ans = http("GET", wd.base + "/status", timeout=2)
        return st == 200 and ans["value"]["ready"]
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
