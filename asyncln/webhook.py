"""bLIP-55 webhook calls: HTTPS POSTs on their own threads, never on the payment's path.

The shell hands :meth:`Sender.submit` one URL and a ``prepare`` function
that returns the body and headers (it signs with lightningd's
``signmessage``, so it runs here, on a sender thread, not on the worker).
Each POST has a bounded timeout and a few retries with backoff; the queues
are bounded, and a full queue drops the call and counts it. Whatever a
webhook does (hang, fail, redirect), a held payment neither waits for it
nor changes: the sender only logs and counts.

Calls to one URL go one after another, in order, on that URL's own thread
(started when it has calls, gone when it has none): bLIP-55 wants
``lsps5.webhook_registered`` to reach a webhook before anything else, and a
slow webhook then delays only itself, never another webhook or client.
A webhook's host must resolve to public addresses only (or loopback, with
the dev option), so a client cannot make S POST into S's own network; the
URL itself is never logged (it carries the client's tokens).
"""

import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Tuple
from urllib.parse import urlsplit

from .lsps5 import public_address

TIMEOUT_SECONDS = 5.0      # one POST, connect to last byte
RETRIES = 2                # after the first try, on a network error or a 5xx
BACKOFF_SECONDS = 1.0      # doubled after each retry
MAX_QUEUED = 64            # calls waiting or being sent, all URLs together; more are dropped

Prepared = Tuple[bytes, Dict[str, str]]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """bLIP-55: the LSP SHOULD NOT follow redirections (they show as an HTTPError)."""

    def redirect_request(self, *args, **kwargs):
        return None


@dataclass(frozen=True)
class _Call:
    what: str                             # for the log: method and client
    url: str
    prepare: Callable[[], Prepared]


class Refused(Exception):
    """The webhook's host is not one S may POST to."""


class Sender:
    def __init__(self, log: Callable[..., None], allow_loopback: bool = False,
                 timeout: float = TIMEOUT_SECONDS, retries: int = RETRIES,
                 backoff: float = BACKOFF_SECONDS, max_queued: int = MAX_QUEUED):
        self.log = log
        self.allow_loopback = allow_loopback
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.max_queued = max_queued
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._lock = threading.Lock()
        self._calls: Dict[str, Deque[_Call]] = {}   # URL -> its calls; a thread drains each
        self._queued = 0
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}

    def submit(self, what: str, url: str, prepare: Callable[[], Prepared]) -> bool:
        """Queue one POST behind the earlier ones to ``url``; False (and counted) when full."""
        with self._lock:
            if self._queued >= self.max_queued:
                self.counts["dropped"] += 1
                full = True
            else:
                full, self._queued = False, self._queued + 1
                calls = self._calls.get(url)
                if calls is None:
                    calls = self._calls[url] = deque()
                    threading.Thread(target=self._drain, args=(url,), name="asyncln-webhook",
                                     daemon=True).start()
                calls.append(_Call(what, url, prepare))
        if full:
            self.log(f"webhook queue full: dropped {what}", level="warn")
        return not full

    def _drain(self, url: str) -> None:
        """One URL's calls in order; the thread ends (under the lock) when none is left."""
        while True:
            with self._lock:
                calls = self._calls[url]
                if not calls:
                    del self._calls[url]
                    return
                call = calls.popleft()
            ok = self._send(call)
            with self._lock:
                self._queued -= 1
                self.counts["sent" if ok else "failed"] += 1
            self.log(f"webhook {call.what} {'delivered' if ok else 'failed'}",
                     level="debug" if ok else "info")

    def _send(self, call: _Call) -> bool:
        try:
            self.check_host(call.url)
            body, headers = call.prepare()
            return self._post(call.url, body, headers)
        except Exception as e:  # signmessage failed, a refused host: the thread lives on
            self.log(f"webhook {call.what} not sent: {e!r}", level="info")
            return False

    def check_host(self, url: str) -> None:
        """An http(s) URL whose host resolves to public addresses only (or loopback, when allowed).

        A name can resolve differently a moment later (DNS rebinding); this
        stops the plain case of a URL naming an internal host.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
            raise Refused("not an http(s) URL with a host")  # urllib would open file: and data:
        try:
            found = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as e:
            raise Refused(f"host does not resolve: {e}") from None
        for *_, address in found:
            ip = address[0]
            if not (public_address(ip) or (self.allow_loopback and ipaddress.ip_address(ip).is_loopback)):
                raise Refused(f"host resolves to {ip}, not a public address")

    def _post(self, url: str, body: bytes, headers: Dict[str, str]) -> bool:
        """True on 200 OK. Retries a network error or a 5xx; any other answer is final."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self.timeout) as answer:
                    if answer.status == 200:
                        return True
                    self.log(f"webhook answered {answer.status}", level="info")
                    return False
            except urllib.error.HTTPError as e:
                e.close()
                self.log(f"webhook answered {e.code}", level="info")
                if e.code < 500:
                    return False
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.log(f"webhook unreachable: {e!r}", level="info")
        return False
