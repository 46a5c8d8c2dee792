"""bLIP-55 webhook calls: HTTPS POSTs on their own threads, never on the payment's path.

The shell hands :meth:`Sender.submit` one URL and a ``prepare`` function
that returns the body and headers (it signs with lightningd's
``signmessage``, so it runs here, on a sender thread, not on the worker).
Each POST has a bounded timeout and a few retries with backoff; the queues
are bounded, and a full queue drops the call and counts it. Whatever a
webhook does (hang, fail, redirect), a held payment neither waits for it
nor changes: the sender only logs and counts.

One client's calls all go through one thread's queue, in order: bLIP-55
wants ``lsps5.webhook_registered`` to reach a webhook before anything else.
A webhook's host must resolve to public addresses only (or loopback, with
the dev option), so a client cannot make S POST into S's own network; the
URL itself is never logged (it carries the client's tokens).
"""

import ipaddress
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Tuple
from urllib.parse import urlsplit

from .lsps5 import public_address

TIMEOUT_SECONDS = 5.0      # one POST, connect to last byte
RETRIES = 2                # after the first try, on a network error or a 5xx
BACKOFF_SECONDS = 1.0      # doubled after each retry
MAX_QUEUED = 64            # calls waiting, per sender thread; more are dropped
THREADS = 2                # one slow webhook must not hold up every other client's

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
                 backoff: float = BACKOFF_SECONDS, max_queued: int = MAX_QUEUED,
                 threads: int = THREADS):
        self.log = log
        self.allow_loopback = allow_loopback
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._queues = [queue.Queue(max_queued) for _ in range(threads)]
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._lock = threading.Lock()
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}
        for n, calls in enumerate(self._queues):
            threading.Thread(target=self._work, args=(calls,), name=f"asyncln-webhook-{n}",
                             daemon=True).start()

    def submit(self, client: str, what: str, url: str, prepare: Callable[[], Prepared]) -> bool:
        """Queue one POST behind ``client``'s earlier ones; False (and counted) when full."""
        calls = self._queues[zlib.crc32(client.encode()) % len(self._queues)]
        try:
            calls.put_nowait(_Call(what, url, prepare))
            return True
        except queue.Full:
            self._count("dropped")
            self.log(f"webhook queue full: dropped {what}", level="warn")
            return False

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _work(self, calls: queue.Queue) -> None:
        while True:
            call = calls.get()
            try:
                self.check_host(call.url)
                body, headers = call.prepare()
                ok = self._post(call.url, body, headers)
            except Exception as e:  # signmessage failed, a refused host: the thread lives on
                self.log(f"webhook {call.what} not sent: {e!r}", level="info")
                ok = False
            self._count("sent" if ok else "failed")
            self.log(f"webhook {call.what} {'delivered' if ok else 'failed'}",
                     level="debug" if ok else "info")

    def check_host(self, url: str) -> None:
        """Every address the host resolves to is public (or loopback, when allowed).

        A name can resolve differently a moment later (DNS rebinding); this
        stops the plain case of a URL naming an internal host.
        """
        parts = urlsplit(url)
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
