#!/usr/bin/env python3
"""Takes the README's screenshots with headless Chromium (Debian's chromium and chromium-driver).

Usage (from the repository root, after `swift build -c release`):
    python3 docs/screenshots.py --model MODEL_DIR --report REPORT.html [--user 10] [--out docs]

1. docs/report.png: the top of an `affinity report` page (comparison, histograms, popularity bias, maps).
2. docs/dashboard.png: `affinity serve --model MODEL_DIR` on a free loopback port with a temporary
   store, a few events posted, then the dashboard with the playground asked for --user's
   recommendations (typed and clicked through WebDriver, as the browser test does).
Standard library only; chromedriver speaks the W3C WebDriver protocol over HTTP.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    def __init__(self, width, height):
        self.port = free_port()
        self.process = subprocess.Popen(["chromedriver", f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self.call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        options = {"binary": shutil.which("chromium") or "/usr/bin/chromium",
                   "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}"]}
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}})["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        return json.load(urllib.request.urlopen(request, timeout=60))["value"]

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def element(self, selector):
        return list(self.s("POST", "/element", {"using": "css selector", "value": selector}).values())[0]

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))
        print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)")

    def close(self):
        try:
            self.s("DELETE", "")
        finally:
            self.process.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--user", default="10")
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "affinity"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs"))
    args = ap.parse_args()

    driver = Driver(1280, 2200)
    try:
        driver.s("POST", "/url", {"url": "file://" + os.path.abspath(args.report)})
        driver.screenshot(os.path.join(args.out, "report.png"))
    finally:
        driver.close()

    work = tempfile.mkdtemp(prefix="affinity-shots-")
    port = free_port()
    server = subprocess.Popen([args.binary, "serve", "--model", args.model, "--store", os.path.join(work, "store.sqlite"),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        events = [{"user": args.user, "item": i, "type": "view"} for i in ["2571", "1196"]]
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/events", data=json.dumps({"events": events}).encode(),
                                                      method="POST", headers={"Content-Type": "application/json"}))
        for path in ["/v1/users/1/recommendations", "/v1/users/2/recommendations?explain=true", "/v1/items/260/similar"] * 5:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}")
        driver = Driver(1280, 2000)
        try:
            driver.s("POST", "/url", {"url": f"http://127.0.0.1:{port}/"})
            driver.s("POST", f"/element/{driver.element('#user')}/value", {"text": args.user})
            driver.s("POST", f"/element/{driver.element('#recommend')}/click", {})
            for _ in range(100):
                if driver.s("POST", "/elements", {"using": "css selector", "value": "#results tr.result"}):
                    break
                time.sleep(0.1)
            driver.screenshot(os.path.join(args.out, "dashboard.png"))
        finally:
            driver.close()
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
