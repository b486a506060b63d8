#!/usr/bin/env python3
"""Browser test of the web page of `xdrec serve`, driven in headless Chromium over WebDriver.

Usage: browser_test.py PATH/TO/xdrec

Trains a tiny iALS model on synthetic data, starts `xdrec serve` with a bearer token, starts chromedriver
and drives the page at GET / the way a person would: the header, the list of the preselected user, like and
dislike (with and without the token), the feedback panel, adding an item by its text and a profile query.
Only the Python standard library is used: the W3C WebDriver protocol is spoken over urllib.

Exit status: 0 passed, 1 failed, 77 skipped (chromedriver or Chromium not installed; ctest SKIP_RETURN_CODE).
Environment: XDREC_CHROMEDRIVER, XDREC_CHROMIUM override where the two are looked for;
XDREC_BROWSER_TIMEOUT (seconds, default 20) is how long each condition is waited for.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

TOKEN = "my-token-123"
DATA = "synthetic:users=300,items=200"
K = 10
WAIT = float(os.environ.get("XDREC_BROWSER_TIMEOUT", "20"))  # per condition; generous for a slow 2-core CI box
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


class Failure(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None, timeout=30):
    """(status, parsed JSON or text) of one request; HTTP errors are answers too, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw.decode() or "null")
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(what, fn, timeout=WAIT, interval=0.1):
    """Polls fn() until it returns something truthy; Failure naming `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        try:
            last = fn()
            last_exc = None
            if last:
                return last
        except Failure:
            raise
        except Exception as e:  # a transient error (stale element, page mid-render); keep polling
            last_exc = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


class WebDriver:
    """The few W3C WebDriver commands the test needs, over urllib."""

    def __init__(self, base):
        self.base = base
        self.sid = None

    def _call(self, method, path, body=None, timeout=60):
        status, ans = http(method, self.base + path, body if body is not None or method != "POST" else {},
                           timeout=timeout)
        value = ans.get("value") if isinstance(ans, dict) else ans
        if status != 200:
            if isinstance(value, dict) and "error" in value:
                raise WebDriverError(value["error"], value.get("message", "").splitlines()[0:1])
            raise WebDriverError(f"HTTP {status}", [str(ans)[:300]])
        return value

    def start(self, chromium, profile_dir):
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-extensions", "--no-first-run", "--window-size=1280,1000",
                         "--user-data-dir=" + profile_dir],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"pageLoad": 60000, "script": 30000, "implicit": 0},
        }
        value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}}, timeout=120)
        self.sid = value["sessionId"]
        return value.get("capabilities", {})

    def quit(self):
        if self.sid:
            try:
                self._call("DELETE", f"/session/{self.sid}", timeout=30)
            finally:
                self.sid = None

    def s(self, path):
        return f"/session/{self.sid}{path}"

    def get(self, url):
        self._call("POST", self.s("/url"), {"url": url})

    def find(self, css):
        return self._call("POST", self.s("/element"), {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css):
        self._call("POST", self.s(f"/element/{self.find(css)}/click"))

    def clear(self, css):
        self._call("POST", self.s(f"/element/{self.find(css)}/clear"))

    def type(self, css, text):
        """Replaces the field's text with `text`, typed as key strokes."""
        el = self.find(css)
        self._call("POST", self.s(f"/element/{el}/clear"))
        self._call("POST", self.s(f"/element/{el}/value"), {"text": text})

    def js(self, script, *args):
        return self._call("POST", self.s("/execute/sync"), {"script": script, "args": list(args)})

    def browser_log(self):
        """Console entries of the page (chromedriver's extension); None where it is not available."""
        try:
            return self._call("POST", self.s("/se/log"), {"type": "browser"}) or []
        except WebDriverError:
            return None


class WebDriverError(Exception):
    def __init__(self, error, message):
        super().__init__(f"{error}: {' '.join(message)}".strip())
        self.error = error


# What the page shows, read in one go (no element references that a re-render could make stale).
STATE_JS = """
const rows = [...document.querySelectorAll('#list tbody tr')];
const st = document.getElementById('status');
return {
  health: document.getElementById('health').textContent,
  user: document.getElementById('user').value,
  title: document.getElementById('list-title').textContent,
  rows: rows.map((tr) => tr.dataset.item),
  buttons: rows.map((tr) => tr.querySelectorAll('button.fb-like, button.fb-dislike').length),
  status: st.textContent,
  statusError: st.classList.contains('err'),
  events: document.getElementById('events').textContent,
  addResult: document.getElementById('add-result').textContent,
  domains: [...document.querySelectorAll('#new-domain option')].map((o) => o.value),
};
"""


def find_tool(env, names, fallbacks):
    p = os.environ.get(env)
    if p:
        return p if os.access(p, os.X_OK) else None
    for n in names:
        w = shutil.which(n)
        if w:
            return w
    for f in fallbacks:
        if os.access(f, os.X_OK):
            return f
    return None


class Run:
    def __init__(self, xdrec, chromedriver, chromium, tmp):
        self.xdrec, self.chromedriver, self.chromium, self.tmp = xdrec, chromedriver, chromium, tmp
        self.server = self.driver_proc = None
        self.wd = None
        self.base = None
        self.checked = []

    def ok(self, what):
        self.checked.append(what)
        log(f"  ok   {what}")

    # ---- processes ----

    def start_server(self):
        model = os.path.join(self.tmp, "model")
        t0 = time.monotonic()
        r = subprocess.run([self.xdrec, "train", DATA, "-m", "ials", "-o", model, "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        if r.returncode != 0:
            raise Failure(f"xdrec train failed ({r.returncode}):\n{r.stdout}")
        log(f"  trained a tiny iALS model in {time.monotonic() - t0:.1f} s")
        token_file = os.path.join(self.tmp, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.server_log = os.path.join(self.tmp, "server.log")
        for attempt in range(3):  # the free port can be taken between picking and binding it
            port = free_port()
            with open(self.server_log, "w") as logf:
                self.server = subprocess.Popen(
                    [self.xdrec, "serve", "--model", model, "--data", DATA, "--port", str(port),
                     "--token-file", token_file, "--db", os.path.join(self.tmp, "events.sqlite"),
                     "--text", "auto", "--access-log", os.path.join(self.tmp, "access.log")],
                    stdout=logf, stderr=subprocess.STDOUT)
            self.base = f"http://127.0.0.1:{port}"
            t0 = time.monotonic()
            while time.monotonic() - t0 < 120:  # start-up may encode item texts
                if self.server.poll() is not None:
                    break
                try:
                    if http("GET", self.base + "/health", timeout=2)[0] == 200:
                        log(f"  server up on port {port} in {time.monotonic() - t0:.1f} s")
                        return
                except OSError:
                    pass
                time.sleep(0.2)
            out = tail(self.server_log)
            if self.server.poll() is not None and "in use" in out and attempt < 2:
                continue
            raise Failure(f"xdrec serve did not answer GET /health (exit {self.server.poll()}):\n{out}")

    def start_driver(self):
        port = free_port()
        self.driver_log = os.path.join(self.tmp, "chromedriver.log")
        with open(self.driver_log, "w") as logf:
            self.driver_proc = subprocess.Popen([self.chromedriver, f"--port={port}"], stdout=logf,
                                                stderr=subprocess.STDOUT)
        self.wd = WebDriver(f"http://127.0.0.1:{port}")

        def ready():
            if self.driver_proc.poll() is not None:
                raise Failure(f"chromedriver exited ({self.driver_proc.returncode}):\n{tail(self.driver_log)}")
            try:
                st, ans = http("GET", self.wd.base + "/status", timeout=2)
                return st == 200 and ans["value"]["ready"]
            except OSError:
                return False

        wait_for("chromedriver to be ready", ready, timeout=30)
        try:
            caps = self.wd.start(self.chromium, os.path.join(self.tmp, "profile"))
        except WebDriverError as e:
            raise Failure(f"could not start headless Chromium ({self.chromium}): {e}\n{tail(self.driver_log)}")
        log(f"  headless {caps.get('browserName', 'chrome')} {caps.get('browserVersion', '')} via chromedriver")

    def stop(self):
        if self.wd:
            try:
                self.wd.quit()
            except Exception as e:
                log(f"  (could not delete the WebDriver session: {e})")
        for name, p, sig in (("chromedriver", self.driver_proc, signal.SIGTERM),
                             ("xdrec serve", self.server, signal.SIGTERM)):
            if p is None or p.poll() is not None:
                continue
            p.send_signal(sig)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log(f"  ({name} did not stop on SIGTERM; killed)")
                p.kill()
                p.wait()

    # ---- helpers ----

    def state(self):
        return self.wd.js(STATE_JS)

    def server_events(self, user):
        st, ans = http("GET", self.base + "/v1/feedback?user=" + urllib.parse.quote(user), token=TOKEN)
        if st != 200:
            raise Failure(f"GET /v1/feedback answered {st}: {ans}")
        return ans["events"]

    def wait_page(self, what, cond):
        """The page state once cond(state) holds."""
        return wait_for(what, lambda: (lambda s: s if cond(s) else None)(self.state()))

    def wait_list(self, what, cond=lambda s: True):
        """The page state once the list holds K rows with buttons and `cond` holds."""
        return self.wait_page(what, lambda s: len(s["rows"]) == K and all(b == 2 for b in s["buttons"]) and cond(s))

    def feedback_click(self, kind, row):
        """Clicks the like/dislike button of the row holding `row` (an item id)."""
        sel = f'#list tbody tr[data-item="{row}"] button.fb-{kind}'
        for attempt in range(3):  # a re-render between finding and clicking leaves a stale reference
            try:
                self.wd.click(sel)
                return
            except WebDriverError as e:
                if e.error not in ("stale element reference", "no such element") or attempt == 2:
                    raise Failure(f"cannot click {kind} on {row}: {e}")
                time.sleep(0.2)

    # ---- the checks ----

    def feedback_stored(self, user, kind, item, n_events):
        """Clicks `kind` on `item`'s row; the list re-renders without it, #status confirms it, and the server
        holds `n_events` events of the user, the last this one. Returns the page state."""
        self.feedback_click(kind, item)
        s = self.wait_list(f"the list to re-render without the {kind}d {item}",
                           lambda s: item not in s["rows"] and not s["statusError"])
        if not s["status"].startswith(f"{kind} on {item} stored"):
            raise Failure(f"#status does not confirm the {kind}: {s['status']!r}")
        ev = self.server_events(user)
        if len(ev) != n_events or (ev[-1]["item"], ev[-1]["type"]) != (item, kind):
            raise Failure(f"the server's feedback of {user} after the {kind}: {ev}")
        return s

    def run(self):
        self.start_server()
        st, health = http("GET", self.base + "/health")
        self.start_driver()
        t0 = time.monotonic()
        self.wd.get(self.base + "/")

        # 1. the header shows the model once /health has loaded
        s = self.wait_page("the header to show the model", lambda s: health["model"] in s["health"])
        if f"{health['items']} items" not in s["health"] or f"{health['users']} users" not in s["health"]:
            raise Failure(f"header does not show the item/user counts of /health: {s['health']!r}")
        if s["domains"] != health["domains"]:
            raise Failure(f"#new-domain offers {s['domains']}, /health says {health['domains']}")
        self.ok(f"header shows the model ({health['model'].split(':')[0]}, {health['items']} items) "
                f"and the domains {health['domains']}")

        # 2. the list fills with K rows for the preselected user, matching the API
        s = self.wait_list(f"the list to fill with {K} rows")
        user = s["user"]
        if not user:
            raise Failure("no user was preselected in #user")
        st, api = http("GET", f"{self.base}/v1/recommend?user={urllib.parse.quote(user)}&k={K}")
        api_items = [x["item"] for x in api["items"]]
        if s["rows"] != api_items:
            raise Failure(f"the page lists {s['rows']} for {user}, GET /v1/recommend gives {api_items}")
        if s["statusError"]:
            raise Failure(f"#status shows an error after loading: {s['status']!r}")
        self.ok(f"list shows the {K} recommendations of the preselected user {user} (same as the API)")

        # 3. like the first row with the token: stored, and the list re-renders without it
        self.wd.type("#token", TOKEN)
        before = len(self.server_events(user))
        liked = s["rows"][0]
        s = self.feedback_stored(user, "like", liked, before + 1)
        self.ok(f"like on the first row ({liked}) stored (POST /v1/feedback) and the item left the list")

        # 4. the feedback panel shows the like
        self.wait_page(f"'like {liked}' in the feedback panel", lambda s: f"like {liked}" in s["events"])
        self.ok("'Feedback of this user' panel shows the like")

        # 5. dislike another item
        disliked = s["rows"][2]
        s = self.feedback_stored(user, "dislike", disliked, before + 2)
        self.wait_page(f"'dislike {disliked}' and 'like {liked}' in the feedback panel",
                       lambda s: f"dislike {disliked}" in s["events"] and f"like {liked}" in s["events"])
        self.ok(f"dislike on {disliked} stored, the item left the list, the panel shows both events")

        # 5b. two likes in quick succession (the second click before the first re-render): both stored, and the
        # list settles without either (a re-render answered late must not bring one back)
        a, b = s["rows"][0], s["rows"][1]
        self.wd.js("""for (const id of arguments[0])
                        document.querySelector(`#list tbody tr[data-item="${id}"] button.fb-like`).click();""", [a, b])
        s = self.wait_list(f"the list to settle without {a} and {b}",
                           lambda s: a not in s["rows"] and b not in s["rows"] and not s["statusError"])
        time.sleep(0.5)  # a late answer would show itself now
        s = self.state()
        if a in s["rows"] or b in s["rows"]:
            raise Failure(f"a late re-render brought back a liked item: {s['rows']}")
        ev = self.server_events(user)
        if len(ev) != before + 4 or sorted(e["item"] for e in ev[-2:]) != sorted([a, b]):
            raise Failure(f"the server's feedback of {user} after two quick likes: {ev}")
        self.ok(f"two quick likes ({a}, {b}) both stored and the list settled without them")

        # 6. add an item by its text
        domain = "kitchen" if "kitchen" in health["domains"] else health["domains"][-1]
        new_id = f"{domain}:browser-test-pan"
        self.wd.type("#new-id", new_id)
        self.wd.type("#new-title", "Cast-iron skillet")
        self.wd.type("#new-desc", "a heavy cast-iron pan for searing steaks and baking cornbread")
        self.wd.click(f'#new-domain option[value="{domain}"]')
        chosen = self.wd.js("return document.getElementById('new-domain').value;")
        if chosen != domain:
            raise Failure(f"#new-domain shows {chosen!r} after choosing {domain!r}")
        self.wd.click("#add")
        if health.get("encoder"):
            s = self.wait_page(f"'added {new_id}' in #add-result", lambda s: s["addResult"].startswith(f"added {new_id}"))
            if "most similar:" not in s["addResult"]:
                raise Failure(f"#add-result lacks the similar items: {s['addResult']!r}")
            st, sim = http("GET", f"{self.base}/v1/similar?k=3&item={urllib.parse.quote(new_id)}")
            if st != 200:
                raise Failure(f"the added item is unknown to the server: GET /v1/similar answered {st}: {sim}")
            self.ok(f"item added by text: #add-result says {s['addResult']!r}")
        else:  # no text encoder installed: the server refuses, and the page must say why
            s = self.wait_page("the refusal in #add-result", lambda s: "encoder" in s["addResult"])
            self.ok(f"server has no text encoder: #add-result shows the refusal {s['addResult']!r}")
        self.wait_list("the list to be back after adding")

        # 7. a profile text: whatever the server answers POST /v1/recommend, the page must show it
        profile = "loves spicy food and cast-iron cookware"
        st, api = http("POST", self.base + "/v1/recommend", {"profile": profile, "k": K, "domain": "",
                                                            "diversity": 0, "explore": 0, "explain": True})
        self.wd.type("#profile", profile)
        self.wd.click("#go")
        if st == 200:
            want = [x["item"] for x in api["items"]]
            s = self.wait_page("the profile's list", lambda s: s["rows"] == want and "profile" in s["title"])
            if any(s["buttons"]):
                raise Failure("the profile's list offers feedback buttons (there is no user to store them for)")
            self.ok(f"profile query lists the same {len(want)} items as POST /v1/recommend")
        else:
            msg = api.get("error", "") if isinstance(api, dict) else str(api)
            if not msg:
                raise Failure(f"POST /v1/recommend with a profile answered {st} without a reason")
            s = self.wait_page(f"the refusal {msg!r} as an error in #status",
                               lambda s: s["statusError"] and s["status"] == msg)
            if s["rows"]:
                raise Failure(f"the list still shows {len(s['rows'])} rows next to the error {msg!r}")
            if "profile" not in msg.lower():
                raise Failure(f"the refusal does not say what is wrong with the profile: {msg!r}")
            self.ok(f"profile refused by this model ({st}); #status shows {msg!r} and the list is empty")
        self.wd.clear("#profile")
        self.wd.click("#go")
        s = self.wait_list("the user's list to come back", lambda s: s["title"].endswith(user))

        # 8. without the token a like is refused, said so in #status, and nothing is stored
        self.wd.clear("#token")
        before = len(self.server_events(user))
        target = s["rows"][0]
        self.feedback_click("like", target)
        s = self.wait_page("an error about the token in #status",
                           lambda s: s["statusError"] and "token" in s["status"].lower())
        time.sleep(0.5)  # let a (wrong) re-render or a late write show itself
        s, after = self.state(), len(self.server_events(user))
        if after != before:
            raise Failure(f"a like without the token changed the server's feedback count {before} -> {after}")
        if target not in s["rows"]:
            raise Failure(f"{target} left the list although its like was refused")
        self.ok(f"like without the token refused: #status shows {s['status']!r}, feedback count stays {after}")

        # 9. no uncaught script errors on the page (the refused requests above are network entries, not errors)
        entries = self.wd.browser_log()
        if entries is None:
            log("  (the browser console cannot be read through this chromedriver; not checked)")
        else:
            errors = [e.get("message", "") for e in entries
                      if e.get("level") == "SEVERE" and e.get("source") != "network"]
            if errors:
                raise Failure("script errors on the page:\n  " + "\n  ".join(errors))
            self.ok("no script errors in the browser console")
        log(f"  (page checks took {time.monotonic() - t0:.1f} s)")


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    xdrec = os.path.abspath(sys.argv[1])
    if not os.access(xdrec, os.X_OK):
        log(f"FAIL: the xdrec binary {xdrec} is missing or not executable")
        return 1
    chromedriver = find_tool("XDREC_CHROMEDRIVER", ["chromedriver"], ["/usr/bin/chromedriver",
                                                                      "/usr/lib/chromium/chromedriver"])
    chromium = find_tool("XDREC_CHROMIUM", ["chromium", "chromium-browser", "google-chrome"],
                         ["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
    if not chromedriver or not chromium:
        missing = " and ".join(n for n, p in (("chromedriver", chromedriver), ("chromium", chromium)) if not p)
        log(f"SKIP: {missing} not found (apt-get install chromium chromium-driver, or set "
            f"XDREC_CHROMEDRIVER / XDREC_CHROMIUM); the browser test of the web page is skipped")
        return 77
    # ctest's timeout (or a CI runner) ends the test with SIGTERM: still clean up in the finally below.
    def on_term(*_):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the clean-up finish
        raise Failure("stopped by SIGTERM (a timeout?)")
    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    log(f"browser test of the xdrec serve web page ({xdrec}, {chromium}, {chromedriver})")
    tmp = tempfile.mkdtemp(prefix="xdrec-browser-")
    run = Run(xdrec, chromedriver, chromium, tmp)
    failed = False
    try:
        run.run()
    except Failure as e:
        failed = True
        log(f"FAIL: {e}")
    except Exception as e:  # a broken driver or server: still a failure, with what is known
        failed = True
        log(f"FAIL: {type(e).__name__}: {e}")
    finally:
        if failed:
            try:
                if run.wd and run.wd.sid:
                    log("page state at the failure:\n" +
                        "\n".join(f"  {k}: {json.dumps(v)}" for k, v in run.state().items()))
            except Exception:
                pass
            if run.server is not None:
                log("--- server log (tail) ---\n" + tail(run.server_log))
            if run.driver_proc is not None:
                log("--- chromedriver log (tail) ---\n" + tail(run.driver_log, 15))
        run.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(run.checked)
    if failed:
        log(f"FAILED after {n} passing checks ({time.monotonic() - t0:.1f} s)")
        return 1
    log(f"PASSED: {n} checks in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
