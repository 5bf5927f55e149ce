"""What the real-browser tests share: Debian's chromium (found, or the test skips, or fails in CI),
the real application served on 127.0.0.1 in a thread, a dumped DOM as a small tree, and a small
DevTools-protocol client over a pipe to drive a page (type, click, wait for the DOM, screenshot).

Waiting is always on the page itself: `Page.wait_for` resolves inside the browser from a
MutationObserver the moment a condition holds; its timeout only bounds a hang.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from llm_service.api.app import create_app
from llm_service.db.pool import create_pool
from llm_service.db.urls import DatabaseUrls
from llm_service.settings import Settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--mute-audio",
)
VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


def chromium_path() -> str:
    """Debian's chromium; without it the test skips, except in CI (CI=true), where it fails."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = (
        "chromium is not installed and the test set-up could not install it "
        "(`make browser` runs `apt-get install chromium`); the page tests need a browser"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + "; in CI the browser tests must run, not skip")
    pytest.skip(message)


# --------------------------------------------------------------------------------------------
# A dumped DOM, as a small tree
# --------------------------------------------------------------------------------------------


@dataclass
class Node:
    """An element of the rendered page."""

    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All text inside, in order."""
        return "".join(self.parts)

    def find_all(self, **attrs: str) -> list[Node]:
        """Every descendant whose attributes include `attrs` (data_testid -> data-testid)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        found = []
        for child in self.children:
            if all(child.attrs.get(k) == v for k, v in want.items()):
                found.append(child)
            found.extend(child.find_all(**attrs))
        return found

    def one(self, **attrs: str) -> Node:
        """The single descendant matching `attrs`."""
        (node,) = self.find_all(**attrs)
        return node


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        for node in self.stack:
            node.parts.append(data)


def parse_dom(html: str) -> Node:
    """The tree of a dumped DOM."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# --------------------------------------------------------------------------------------------
# The real application on 127.0.0.1
# --------------------------------------------------------------------------------------------


@dataclass
class LiveServer:
    """The application served by uvicorn in a thread."""

    base_url: str
    server: uvicorn.Server
    thread: threading.Thread


@contextlib.contextmanager
def serve_app(
    settings: Settings,
    database_urls: DatabaseUrls,
    *,
    run_workers: bool = False,
    name: str = "tests-browser",
) -> Iterator[LiveServer]:
    """Serve the real application (as the application role) on a free local port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    box: dict[str, Any] = {}
    ready = threading.Event()

    async def serve() -> None:
        pool = await create_pool(database_urls.app, application_name=name)
        try:
            app = create_app(settings, pool=pool, run_workers=run_workers)
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
            box["server"] = server
            ready.set()
            await server.serve(sockets=[sock])
        finally:
            await pool.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(30)
    server: uvicorn.Server = box["server"]
    deadline = time.monotonic() + 60
    while not server.started:  # uvicorn offers no event for this
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)  # a polling interval
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def run_chromium(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless chromium run (e.g. --dump-dom URL) with a throw-away profile."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )


# --------------------------------------------------------------------------------------------
# Driving a page: the DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out)
# --------------------------------------------------------------------------------------------


class BrowserError(AssertionError):
    """The browser answered a command with an error, or a page script threw."""


_WAIT_JS = """
new Promise((resolve) => {
  const test = () => { try { return (%s)(); } catch (e) { return null; } };
  const first = test();
  if (first) { resolve(first); return; }
  const observer = new MutationObserver(() => {
    const value = test();
    if (value) { observer.disconnect(); resolve(value); }
  });
  observer.observe(document, {subtree: true, childList: true, attributes: true,
                              characterData: true});
})
"""


class Browser:
    """One headless chromium process and the protocol connection to it."""

    def __init__(self, process: asyncio.subprocess.Process, profile: str) -> None:
        """Use `Browser.launch()`."""
        self.process = process
        self.profile = profile
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self.events: list[dict[str, Any]] = []
        self._writer: asyncio.WriteTransport | None = None
        self._reader_task: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, chromium: str) -> AsyncIterator[Browser]:
        """Start chromium with the protocol on a pipe; stop it afterwards."""
        profile = tempfile.mkdtemp(prefix="chromium-cdp-")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        log = os.open(Path(profile) / "chromium.log", os.O_WRONLY | os.O_CREAT, 0o600)
        # bash maps the two pipe ends onto fd 3 and 4, where chromium expects them.
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            script,
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        browser = cls(process, profile)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(from_browser_r, "rb", 0)
        )
        writer, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(to_browser_w, "wb", 0)
        )
        browser._writer = writer
        browser._reader_task = asyncio.create_task(browser._read(reader))
        try:
            yield browser
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.send("Browser.close"), 10)
            with contextlib.suppress(ProcessLookupError):
                if process.returncode is None:
                    await asyncio.wait_for(process.wait(), 10)
            if process.returncode is None:
                process.kill()
                await process.wait()
            writer.close()
            browser._reader_task.cancel()
            os.close(log)
            shutil.rmtree(profile, ignore_errors=True)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await reader.readuntil(b"\0")
            except (asyncio.IncompleteReadError, ConnectionError):
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(BrowserError("chromium went away"))
                return
            message = json.loads(raw[:-1])
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            self.events.append(message)
            for listener in list(self._listeners):
                method, session, waiter = listener
                if message.get("method") == method and session in (None, message.get("sessionId")):
                    self._listeners.remove(listener)
                    if not waiter.done():
                        waiter.set_result(message)

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """One protocol command; its result (BrowserError on an error answer)."""
        assert self._writer is not None
        command_id = next(self._ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        self._writer.write(json.dumps(message).encode() + b"\0")
        async with asyncio.timeout(60):
            answer = await future
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def next_event(self, method: str, session: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event named `method` (register it before causing the event)."""
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._listeners.append((method, session, waiter))
        return waiter

    def forget(self, waiter: asyncio.Future[dict[str, Any]]) -> None:
        """Stop listening for an event no one waits for any more."""
        self._listeners = [item for item in self._listeners if item[2] is not waiter]
        waiter.cancel()

    async def new_page(self, width: int = 1280, height: int = 900) -> Page:
        """A fresh tab, attached, with its console and errors recorded."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"], target["targetId"])
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        await page.set_viewport(width, height)
        return page


class Page:
    """One tab of the browser."""

    def __init__(self, browser: Browser, session: str, target_id: str) -> None:
        """Use `Browser.new_page()`."""
        self.browser = browser
        self.session = session
        self.target_id = target_id

    async def close(self) -> None:
        """Close the tab."""
        await self.browser.send("Target.closeTarget", {"targetId": self.target_id})

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A protocol command for this tab."""
        return await self.browser.send(method, params, self.session)

    async def set_viewport(self, width: int, height: int) -> None:
        """Emulate a window of `width` x `height` CSS pixels (a phone below 600 px)."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        loaded = self.browser.next_event("Page.loadEventFired", self.session)
        await self.send("Page.navigate", {"url": url})
        async with asyncio.timeout(60):
            await loaded

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression[:200]}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, predicate: str, timeout: float = 60) -> Any:
        """Wait until the JavaScript function `predicate` returns a truthy value for the DOM
        (re-tested on every DOM change, inside the page); returns that value."""
        waiting = asyncio.ensure_future(self.evaluate(_WAIT_JS % predicate))
        thrown = self.browser.next_event("Runtime.exceptionThrown", self.session)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait([waiting, thrown], return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():  # a page script threw first: fail now, with its message
                details = thrown.result()["params"]["exceptionDetails"]
                raise BrowserError(f"a page script threw while waiting: {json.dumps(details)}")
            return waiting.result()
        except TimeoutError:
            status = await self.evaluate("document.body ? document.body.innerText : ''")
            raise AssertionError(f"the page never satisfied {predicate}\n{status}") from None
        finally:
            waiting.cancel()
            self.browser.forget(thrown)

    async def click(self, selector: str, *, clicks: int = 1) -> None:
        """A real mouse click (or `clicks` in a row: 2 is a double click) on an element."""
        point = await self.evaluate(
            f"""(() => {{
              const e = document.querySelector({json.dumps(selector)});
              if (!e) return null;
              e.scrollIntoView({{block: "center"}});
              const r = e.getBoundingClientRect();
              return [r.x + r.width / 2, r.y + r.height / 2];
            }})()"""
        )
        assert point is not None, f"no element matches {selector}"
        x, y = point
        for count in range(1, clicks + 1):
            for kind in ("mousePressed", "mouseReleased"):
                await self.send(
                    "Input.dispatchMouseEvent",
                    {"type": kind, "x": x, "y": y, "button": "left", "clickCount": count},
                )

    async def type(self, selector: str, text: str) -> None:
        """Focus an element and type `text` key by key."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        for char in text:
            await self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": char})
            await self.send("Input.dispatchKeyEvent", {"type": "keyUp"})

    async def press(self, key: str) -> None:
        """Press one named key (Enter, Tab, Space, arrows) on the focused element."""
        codes = {
            "Enter": (13, "\r"),
            "Tab": (9, ""),
            " ": (32, " "),
            "ArrowLeft": (37, ""),
            "ArrowRight": (39, ""),
        }
        code, text = codes[key]
        down: dict[str, Any] = {"type": "keyDown", "key": key, "windowsVirtualKeyCode": code}
        if text:
            down["text"] = text
        await self.send("Input.dispatchKeyEvent", down)
        await self.send(
            "Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "windowsVirtualKeyCode": code}
        )

    async def screenshot(self, path: Path) -> None:
        """The whole page as a PNG at `path`."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        viewport = metrics["cssLayoutViewport"]
        clip = {
            "x": 0,
            "y": 0,
            "width": viewport["clientWidth"],
            "height": max(size["height"], viewport["clientHeight"]),
            "scale": 1,
        }
        shot = await self.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
        )
        data = base64.b64decode(shot["data"])

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        await asyncio.to_thread(write)

    def problems(self) -> list[str]:
        """Uncaught script errors and console errors (a CSP violation is one) in this tab."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif event.get("method") == "Log.entryAdded":
                entry = params["entry"]
                # A refused request (401 before sign-in, no favicon) is the server's answer.
                if entry["level"] == "error" and entry.get("source") != "network":
                    found.append(entry.get("text", "")[:500])
            elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(json.dumps(params.get("args", []))[:500])
        return found
