"""bLIP-55 webhook calls: HTTPS POSTs on their own threads, never on the payment's path.

The shell hands :meth:`Sender.submit` the URLs and a ``prepare`` function
that returns the body and headers (it signs with lightningd's
``signmessage``, so it runs here, on a sender thread, not on the worker).
Each POST has a bounded timeout and a few retries with backoff; the queue
is bounded, and a full queue drops the call and counts it. Whatever a
webhook does (hang, fail, redirect), a held payment neither waits for it
nor changes: the sender only logs and counts.
"""

import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

TIMEOUT_SECONDS = 5.0      # one POST, connect to last byte
RETRIES = 2                # after the first try, on a network error or a 5xx
BACKOFF_SECONDS = 1.0      # doubled after each retry
MAX_QUEUED = 64            # calls waiting for a sender thread; more are dropped
THREADS = 2                # one slow webhook must not hold up every other client's

Prepared = Tuple[bytes, Dict[str, str]]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """bLIP-55: the LSP SHOULD NOT follow redirections (they show as an HTTPError)."""

    def redirect_request(self, *args, **kwargs):
        return None


@dataclass(frozen=True)
class _Call:
    what: str                             # for the log: method and client
    urls: Tuple[str, ...]
    prepare: Callable[[], Prepared]


class Sender:
    def __init__(self, log: Callable[..., None], timeout: float = TIMEOUT_SECONDS,
                 retries: int = RETRIES, backoff: float = BACKOFF_SECONDS,
                 max_queued: int = MAX_QUEUED, threads: int = THREADS):
        self.log = log
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._queue: queue.Queue = queue.Queue(max_queued)
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._lock = threading.Lock()
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}
        for n in range(threads):
            threading.Thread(target=self._work, name=f"asyncln-webhook-{n}", daemon=True).start()

    def submit(self, what: str, urls: Sequence[str], prepare: Callable[[], Prepared]) -> bool:
        """Queue one notification to ``urls``; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(_Call(what, tuple(urls), prepare))
            return True
        except queue.Full:
            self._count("dropped", len(urls))
            self.log(f"webhook queue full: dropped {what}", level="warn")
            return False

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            try:
                body, headers = call.prepare()
            except Exception as e:  # e.g. signmessage failed: nothing to send
                self._count("failed", len(call.urls))
                self.log(f"could not prepare {call.what}: {e!r}", level="warn")
                continue
            for url in call.urls:
                try:
                    ok = self._post(url, body, headers)
                except Exception as e:  # the thread must outlive any one webhook
                    self.log(f"internal error posting {call.what}: {e!r}", level="warn")
                    ok = False
                self._count("sent" if ok else "failed")
                self.log(f"webhook {call.what} {'delivered' if ok else 'failed'}",
                         level="debug" if ok else "info")

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
