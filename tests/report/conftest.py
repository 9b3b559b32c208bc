"""Fixtures for the report tests: measured runs (``grokked_run`` is in tests/conftest.py), and
headless Chromium driven over the DevTools protocol.

Chromium is driven with the standard library only: ``--remote-debugging-pipe`` makes it read
DevTools commands (JSON, each ending in a NUL byte) from file descriptor 3 and write replies and
events to file descriptor 4. Where Chromium is missing the browser test is skipped with the
reason, unless the environment variable CI is set (``.ci/run`` installs it): then it fails.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from progsynth.geometry.checkpoints import parse_checkpoint
from progsynth.geometry.contrast import contrast_checkpoints
from progsynth.geometry.ntk import NTKConfig
from progsynth.geometry.paths import record_path, straight_path
from progsynth.geometry.run_ntk import measure_run_ntk
from progsynth.interp.measures import measure_run
from progsynth.report.html import Report, write_report
from progsynth.slt.run_degeneracy import measure_run_degeneracy


@pytest.fixture(scope="session")
def measured_run(tmp_path_factory: pytest.TempPathFactory, grokked_run: Path) -> Path:
    """The grokked run with its interp progress and degeneracy measures, a few LLC rows (whole and by
    component), the NTK at three checkpoints, a path and a contrast in measures.jsonl."""
    out = tmp_path_factory.mktemp("runs") / "measured"
    shutil.copytree(grokked_run, out)
    measure_run(out)
    measure_run_degeneracy(out)
    with open(out / "measures.jsonl", "a") as handle:
        for step, llc in ((0, 5.0), (20, 9.0), (150, 6.5)):
            handle.write(json.dumps({"step": step, "analysis": "llc", "llc": llc, "llc_stderr": 0.4}) + "\n")
            for component, share in (("input", 0.7), ("output", 0.2)):
                handle.write(json.dumps({"step": step, "analysis": "llc", "restrict": component, "data": "train",
                                         "llc": share * llc, "llc_stderr": 0.1}) + "\n")
    measure_run_ntk(out, [0, 43, 150], NTKConfig(inputs=200, top=6, probes=4))
    record_path(straight_path(parse_checkpoint(f"{out}@43"), parse_checkpoint(f"{out}@last"), points=11))
    contrast_checkpoints(out)
    return out


@pytest.fixture(scope="session")
def measured_report(tmp_path_factory: pytest.TempPathFactory, measured_run: Path) -> Report:
    """The report of a copy of the measured run (shared by the tests that only read it)."""
    out = tmp_path_factory.mktemp("runs") / "reported"
    shutil.copytree(measured_run, out)
    return write_report(out)


# ---- headless Chromium over the DevTools pipe ---------------------------------------------------
def chromium_binary() -> str:
    """Path of Debian's chromium; skip (or, with CI set, fail) naming why when it is absent."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found:
        return found
    reason = ("Chromium is not installed (no `chromium` on PATH or at /usr/bin/chromium), so the report "
              "was not checked in a browser; install it with `apt-get install -y chromium`")
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason} (.ci/run should have installed it)")
    pytest.skip(reason)


@dataclass
class PageResult:
    """What loading one page showed."""

    errors: list[str]
    """Console errors, uncaught exceptions and error-level log entries."""
    requests: list[str]
    """URLs of every request the page made."""
    value: Any
    """The result of the probe expression evaluated after load."""
    screenshot: bytes = field(repr=False)
    """A full-page PNG."""


class Chromium:
    """A headless Chromium process and one DevTools session on a fresh tab."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60.0):
        self.timeout = timeout
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # in the child, before exec: fd 3 reads commands, fd 4 writes replies
            read, write = os.dup(to_chrome_r), os.dup(from_chrome_w)  # neither can be clobbered below
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--no-first-run", "--no-default-browser-check", "--mute-audio",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds, pass_fds=(3, 4))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_chrome, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))
        self._messages.put(None)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply, keeping the events that arrive meanwhile."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._messages.get(timeout=max(deadline - time.monotonic(), 0.01))
            if reply is None:
                raise RuntimeError(f"Chromium exited while waiting for {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        """A command in the tab's session."""
        return self.call(method, session=self.session, **params)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == event for e in self.events):
            message = self._messages.get(timeout=max(deadline - time.monotonic(), 0.01))
            if message is None:
                raise RuntimeError(f"Chromium exited while waiting for {event}")
            self.events.append(message)

    def load(self, url: str, probe: str, width: int = 1100) -> PageResult:
        """Open ``url``, wait for its load event, evaluate ``probe`` and take a full-page screenshot."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.page(f"{domain}.enable")
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=800, deviceScaleFactor=1, mobile=False)
        self.events.clear()
        self.page("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        value = self.page("Runtime.evaluate", expression=probe, returnByValue=True)
        if "exceptionDetails" in value:
            raise RuntimeError(f"the probe failed: {value['exceptionDetails']}")
        size = self.page("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.page("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        return PageResult(self._errors(), self._requests(), value["result"].get("value"),
                          base64.b64decode(shot["data"]))

    def _errors(self) -> list[str]:
        errors = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append("exception: " + json.dumps(params["exceptionDetails"])[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append("log: " + params["entry"]["text"])
        return errors

    def _requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, queue.Empty, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    """A headless Chromium (skipped, or failed under CI, when it is not installed)."""
    browser = Chromium(chromium_binary(), tmp_path / "chromium-profile")
    try:
        yield browser
    finally:
        browser.close()
