"""The report renders in headless Chromium with its plots and tables and makes no network
request (all traffic is routed to a local proxy that counts connections)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading

import pytest

from backdoorlab.plots import figure, save_figure
from backdoorlab.report import write_report


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _fake_run(root):
    run = root / "badnets-refusal"
    (run / "attack" / "adapter").mkdir(parents=True)
    (run / "attack" / "metrics.json").write_text(json.dumps({
        "asr_triggered": 0.975, "asr_clean": 0.025, "mcq_accuracy": 0.41,
        "clean_perplexity": 5.1, "baseline_asr_triggered": 0.0, "baseline_asr_clean": 0.0,
        "baseline_mcq_accuracy": 0.42, "baseline_clean_perplexity": 4.9}))
    (run / "attack" / "adapter" / "README.md").write_text("# Backdoored\ncarries a backdoor")
    (run / "defend" / "crow").mkdir(parents=True)
    (run / "defend" / "crow" / "metrics.json").write_text(json.dumps({
        "defense": "crow", "asr_triggered_before": 0.975, "asr_triggered_after": 0.05,
        "asr_clean_after": 0.0, "clean_perplexity_after": 5.0, "mcq_accuracy_after": 0.41}))
    fig, ax = figure()
    ax.plot([0, 1, 2], [0.5, 0.9, 1.0])
    save_figure(fig, run / "analyze" / "probe" / "probe_accuracy.png")
    (run / "resolved.json").write_text(json.dumps({"name": "badnets-refusal", "attack": {
        "kind": "poison", "trigger": "badnets", "target": "refusal"}}))
    return run


class _CountingProxy:
    """A TCP listener standing in for a proxy: every connection is a network request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                first = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
            except OSError:
                first = ""
            if first.strip():  # a connection opened and closed unused requested nothing
                self.requests.append(first)
            conn.close()


def _host(request_line: str) -> str:
    """The host a proxied request line names (``GET http://host/...`` or ``CONNECT host:443``);
    the whole line when it is not a request line."""
    parts = request_line.split(" ")
    target = parts[1] if len(parts) > 1 else request_line
    return target.split("/")[2] if "://" in target else target.split(":")[0]


def test_report_renders_in_chromium_without_network(tmp_path):
    browser = _browser()
    if browser is None:
        if os.environ.get("BACKDOORLAB_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (the CI setup installs it)")
        pytest.skip("chromium not installed")
    run = _fake_run(tmp_path)
    html_path, md_path = write_report([run], tmp_path, title="browser test")
    proxy = _CountingProxy()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-default-apps",
             f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", html_path.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert "<table class=\"headline\">" in page and "after crow" in page
    assert page.count("<img src=\"data:image/png;base64,") == 1
    shot = tmp_path / "shot.png"
    res = subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1100,800",
                                  html_path.as_uri()], capture_output=True, timeout=120)
    assert res.returncode == 0 and shot.stat().st_size > 10_000
    # Chromium's own services (clock sync, component updates) still call home; anything
    # else would come from the page
    own = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")
    from_page = [r for r in proxy.requests if not any(h in _host(r) for h in own)]
    assert from_page == [], from_page
    text = html_path.read_text()
    assert "src='http" not in text and "href='http" not in text and "url(" not in text
    assert "| after crow | 0.050 |" in md_path.read_text()
