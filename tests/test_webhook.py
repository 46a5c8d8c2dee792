"""The webhook sender: bounded time and retries, a bounded queue, no redirects, never raises."""

import http.server
import threading
import time

import pytest
from pyln.testing.utils import wait_for

from asyncln.webhook import Sender


class Hook(http.server.BaseHTTPRequestHandler):
    """Answers with the server's ``status`` after ``delay`` seconds; records each POST."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        time.sleep(getattr(self.server, "delay_paths", {}).get(self.path.split("?")[0],
                                                              self.server.delay))
        self.send_response(self.server.status)
        if self.server.status in (301, 302, 307):
            self.send_header("location", "/elsewhere")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    httpd.daemon_threads = True
    httpd.posts, httpd.status, httpd.delay = [], 200, 0
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook?t=1"
    yield httpd
    httpd.shutdown()


def sender(**kwargs):
    lines = []
    kwargs = {"timeout": 0.5, "backoff": 0.05, "allow_loopback": True, **kwargs}
    return Sender(lambda m, level="info": lines.append(m), **kwargs), lines


def prepared():
    return b'{"jsonrpc":"2.0"}', {"content-type": "application/json", "x-lsps5-signature": "sig"}


def test_delivers_body_and_headers(server):
    s, _ = sender()
    assert s.submit("lsps5.payment_incoming for B", server.url, prepared)
    wait_for(lambda: s.counts["sent"] == 1)
    path, headers, body = server.posts[0]
    assert path == "/hook?t=1" and body == b'{"jsonrpc":"2.0"}'
    assert headers["content-type"] == "application/json" and headers["x-lsps5-signature"] == "sig"


def test_a_5xx_is_retried_a_bounded_number_of_times(server):
    server.status = 500
    s, _ = sender(retries=2)
    s.submit("x", server.url, prepared)
    wait_for(lambda: s.counts["failed"] == 1)
    assert len(server.posts) == 3


def test_a_4xx_and_a_redirect_are_final(server):
    s, _ = sender()
    for status, done in ((404, 1), (302, 2)):
        server.status = status
        s.submit("x", server.url, prepared)
        wait_for(lambda: s.counts["failed"] == done)
    assert [p[0] for p in server.posts] == ["/hook?t=1", "/hook?t=1"]  # /elsewhere never asked


def test_a_slow_webhook_times_out(server):
    server.delay = 2
    s, _ = sender(retries=0, timeout=0.3)
    start = time.monotonic()
    s.submit("x", server.url, prepared)
    wait_for(lambda: s.counts["failed"] == 1)
    assert time.monotonic() - start < 1.5


def test_unreachable_and_failed_signing_are_counted():
    s, _ = sender(retries=1)
    s.submit("x", "http://127.0.0.1:1/", prepared)

    def broken():
        raise RuntimeError("signmessage failed")
    s.submit("y", "http://127.0.0.1:1/", broken)
    wait_for(lambda: s.counts["failed"] == 2)


def test_a_host_that_resolves_to_loopback_is_refused_without_the_dev_option(server):
    s, lines = sender(allow_loopback=False)
    for url in (server.url, server.url.replace("127.0.0.1", "localhost")):
        s.submit("x", url, prepared)
    wait_for(lambda: s.counts["failed"] == 2)
    assert server.posts == [] and any("not a public address" in line for line in lines)


def test_only_http_urls_with_a_host_are_opened(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x")
    s, lines = sender()
    for url in (f"file://{secret}", "data:text/plain,x", "ftp://127.0.0.1/x", "http:///x"):
        s.submit("x", url, prepared)
    wait_for(lambda: s.counts["failed"] == 4)
    assert sum("not an http(s) URL" in line for line in lines) == 4


def test_one_urls_calls_keep_their_order_and_a_slow_one_delays_only_itself(server):
    s, _ = sender(timeout=5)
    slow = server.url.replace("/hook", "/slow")
    server.delay_paths = {"/slow": 3}
    start = time.monotonic()
    s.submit("x", slow, prepared)
    for n in range(6):
        s.submit(f"x{n}", server.url, lambda n=n: (str(n).encode(), {}))
    wait_for(lambda: s.counts["sent"] == 6)
    assert time.monotonic() - start < 3      # the slow webhook still answering
    assert [p[2] for p in server.posts if p[0] == "/hook?t=1"] == [str(n).encode() for n in range(6)]
    wait_for(lambda: s.counts["sent"] == 7)


def test_a_full_queue_drops_and_counts(server):
    server.delay = 1
    s, _ = sender(max_queued=1, retries=0, timeout=5)
    results = [s.submit("x", server.url, prepared) for _ in range(4)]
    assert results[:1] == [True] and not all(results)
    assert s.counts["dropped"] == results.count(False)
