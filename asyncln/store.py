"""Records kept in lightningd's datastore, so held state survives a crash.

Keys are ``["asyncln", <kind>, <key>]`` and values are JSON. The datastore is
lightningd's own database, so a record is durable as soon as the
``datastore`` call returns.

Held records, of which an LSP keeps 100,000, are kept many to an entry
(pages, below): lightningd spends about 26 µs on each entry it lists, and at
one entry a record a restart spent 2.6 s of its 5 s in that alone.
"""

import base64
import binascii
import hashlib
import json
import threading
import zlib
from collections import Counter
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

from pyln.client import RpcError
from pyln.client.lightning import UnixSocket

# Each entry's key and string only: lightningd's hex copy of the value and its
# generation would more than double a large answer.
LISTED = {"datastore": [{"key": True, "string": True}]}

# Kinds kept in pages: kind -> the kind its pages are stored under. A page is
# ``["asyncln", <page kind>, <PAGE_DIGITS hex digits: page_of(key)>]``:
# 4,096 pages, about 25 held records each at 100,000. A datastore that already
# has pages keeps their size (Store.digits): a record's older copy left in a
# page of another size would come back at a restart.
PAGED = {"held": "heldpage"}
PAGE_DIGITS = 3
PAGE_SECRET_LABEL = "asyncln datastore pages"
# A version-2 record's ``next_onion`` as its page keeps it: the onion itself
# (1,366 bytes, eight times the rest of the record) is kept under
# ``["asyncln", "onion", <hash>]`` and read when an attempt is sent, so that a
# restart does not list it (holder_shell.HolderShell.paged).
ONION_SAVED = "saved"
DEL_DOES_NOT_EXIST = 1200  # lightningd's deldatastore error for a key it does not hold


def list_all(rpc, key: List[str]) -> List[dict]:
    """listdatastore under ``key``, its answer read in one pass.

    pyln's reader copies and re-scans its whole buffer for every chunk the
    socket hands it: quadratic in the answer's size. At 100,000 held records
    the plugin did not answer lightningd's init within its 60 s and lightningd
    killed it (tests/integration/test_scale.py). lightningd ends each answer
    with a blank line, as pyln reads it.
    """
    params = {"key": key}
    path = getattr(rpc, "socket_path", None)
    if path is None:  # a stand-in for lightningd (unit tests)
        return rpc.call("listdatastore", params)["datastore"]
    sock = UnixSocket(path)
    try:
        sock.sendall(json.dumps({"jsonrpc": "2.0", "id": "asyncln-listdatastore",
                                 "method": "listdatastore", "params": params,
                                 "filter": LISTED}).encode())
        chunks, last = [], b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RpcError("listdatastore", params, {"message": "lightningd closed the RPC"})
            chunks.append(chunk)
            if b"\n\n" in chunk or last + chunk[:1] == b"\n\n":
                break
            last = chunk[-1:]
    finally:
        sock.close()
    answer = json.loads(b"".join(chunks))
    if "error" in answer:
        raise RpcError("listdatastore", params, answer["error"])
    return answer["result"]["datastore"]


def encode_page(records: Dict[str, dict]) -> str:
    """A page's datastore string: its records' JSON, compressed, in base64.

    Compressed, because lightningd's listing costs about 20 ns per byte it
    writes; base64, because a string needs no hex copy and escapes nothing.
    """
    text = json.dumps(records, sort_keys=True, separators=(",", ":")).encode()
    return base64.b64encode(zlib.compress(text)).decode()


def decode_page(text: str) -> Dict[str, dict]:
    """``encode_page``'s records back; ValueError for anything that is not a page."""
    try:
        records = json.loads(zlib.decompress(base64.b64decode(text, validate=True)))
    except (binascii.Error, zlib.error, UnicodeDecodeError, TypeError) as e:
        raise ValueError(f"not a page of records: {e}") from e
    if not isinstance(records, dict) or not all(isinstance(v, dict) for v in records.values()):
        raise ValueError("not a page of records: a page is a JSON object of objects")
    return records


def page_of(key: str, digits: int = PAGE_DIGITS, secret: bytes = b"") -> str:
    """``key``'s page: the first ``digits`` hex digits of sha256(secret, key).

    Keyed with a secret of the node's, because payment hashes are chosen by
    payers and recipients: about 4,096 tries put a hash in any page they
    like, and each save rewrites its whole page, so a crowded page makes
    every save in it slow (0.3 s at 10,000).
    """
    return hashlib.sha256(secret + key.encode()).hexdigest()[:digits]


def page_secret(rpc) -> bytes:
    """The node's secret that names its pages (``makesecret``: the same at every start)."""
    secret = rpc.call("makesecret", {"string": PAGE_SECRET_LABEL}).get("secret")
    return bytes.fromhex(secret) if secret else b""


class Store:
    """The datastore, by kind. Thread-safe: a page is read, changed and written under its lock."""

    def __init__(self, rpc, namespace: str = "asyncln", secret: bytes = b""):
        self.rpc = rpc
        self.namespace = namespace
        self.secret = secret  # names the pages (page_of)
        # (kind, page) -> the page's string as lightningd last stored it; what
        # get() answers, so "saved" means on disk.
        self._pages: Dict[Tuple[str, str], str] = {}
        # kind -> key -> a record still under its own key, as versions before
        # pages wrote it. A page's copy is always newer: these are never written.
        self._legacy: Dict[str, Dict[str, dict]] = {kind: {} for kind in PAGED}
        self._locks: Dict[Tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        # (kind, page) -> why it could not be read at load: never overwritten.
        self.unreadable: Dict[Tuple[str, str], str] = {}
        self._loaded: set = set()  # paged kinds whose every page load() has read
        # Pages whose last write failed: lightningd may hold what memory lacks, so
        # a deletion writes them even when memory says the record is not there.
        self._unsure: set = set()
        # kind -> its pages' size in hex digits: PAGE_DIGITS, or what load() found on disk
        self.digits: Dict[str, int] = {kind: PAGE_DIGITS for kind in PAGED}

    def put(self, kind: str, key: str, value: dict) -> None:
        if kind not in PAGED:
            return self._write([self.namespace, kind, key], json.dumps(value, sort_keys=True))
        with self._locked(kind, key) as page:
            records = self._page_records(page)
            records[key] = value
            self._write_page(page, records)
            # Only once the page holds it: a crash between leaves both, and the page wins.
            self._drop_legacy(kind, key)

    def delete(self, kind: str, key: str) -> None:
        if kind not in PAGED:
            return self._delete([self.namespace, kind, key])
        with self._locked(kind, key) as page:
            # Its own key first: were the page written first and this then failed,
            # a restart would read the legacy copy back, a record already forgotten.
            self._drop_legacy(kind, key)
            records = self._page_records(page)
            if records.pop(key, None) is not None or page in self._unsure:
                self._write_page(page, records)

    def get(self, kind: str, key: str) -> Optional[dict]:
        if kind not in PAGED:
            found = self.rpc.call("listdatastore", {"key": [self.namespace, kind, key]})["datastore"]
            return next((json.loads(e["string"]) for e in found if "string" in e), None)
        with self._locked(kind, key) as page:
            saved = self._page_records(page).get(key)
            return saved if saved is not None else self._legacy[kind].get(key)

    def writable(self, kind: str, key: str) -> bool:
        """False when ``key``'s page is unreadable: a record there can never be saved."""
        return kind not in PAGED or (kind, self.page(kind, key)) not in self.unreadable

    def page(self, kind: str, key: str) -> str:
        """The page that holds ``key`` of a paged ``kind``."""
        return page_of(key, self.digits[kind], self.secret)

    def load(self, kind: str) -> Dict[str, dict]:
        return dict(self.records(kind))

    def records(self, kind: str) -> Iterator[Tuple[str, dict]]:
        """(key, value) of every record of ``kind``, a page at a time: a restart turns
        each page into records while it is fresh in memory, not 100,000 dicts first."""
        loaded = {key: json.loads(entry["string"]) for key, entry in self._listed(kind)
                  if "string" in entry}
        if kind not in PAGED:
            yield from loaded.items()
            return
        self._legacy[kind] = loaded
        paged = set()
        pages = list(self._listed(PAGED[kind]))
        if pages:  # the size the pages were written with, whatever PAGE_DIGITS says now
            sizes = Counter(len(page) for page, _ in pages)
            self.digits[kind] = max(sizes, key=lambda size: (sizes[size], size))
        for page, entry in pages:
            if "string" not in entry:  # not UTF-8, or keys under it: a page, unreadable
                self.unreadable[(kind, page)] = ("not a page of records: no text value "
                                                 "(not UTF-8, or keys under it)")
                continue
            self._pages[(kind, page)] = entry["string"]
            if len(page) != self.digits[kind]:  # its records may be older copies
                self.unreadable[(kind, page)] = (f"a page of {len(page)} digits among pages of "
                                                 f"{self.digits[kind]}")
                continue
            try:
                records = decode_page(entry["string"])
            except ValueError as e:
                self.unreadable[(kind, page)] = str(e)
                continue
            paged.update(records)
            yield from records.items()
        self._loaded.add(kind)
        # Older versions' records that no page holds: a page's copy is the newer.
        yield from ((key, value) for key, value in loaded.items() if key not in paged)

    # --- below: the datastore calls --------------------------------------------

    def _listed(self, kind: str):
        """(last key part, entry) of every entry of ``kind``; one whose value is not
        UTF-8, or that only stands for the keys under it, has no string."""
        for entry in list_all(self.rpc, [self.namespace, kind]):
            key = entry["key"]
            if len(key) == 3 and key[1] == kind:
                yield key[2], entry

    @contextmanager
    def _locked(self, kind: str, key: str):
        """The page that holds ``key``, under its lock: its read, change and write are one step."""
        page = (kind, self.page(kind, key))
        with self._guard:
            lock = self._locks.setdefault(page, threading.Lock())
        with lock:
            yield page

    def _page_records(self, page: Tuple[str, str]) -> Dict[str, dict]:
        if page in self.unreadable:  # never write over what we could not read
            raise ValueError(f"page {page[1]} of {page[0]} records is unreadable: "
                             f"{self.unreadable[page]}")
        if page[0] not in self._loaded:  # a page or an old key we have not read could be lost
            raise RuntimeError(f"{page[0]} records are written only after load() has read them")
        text = self._pages.get(page)
        return decode_page(text) if text is not None else {}

    def _write_page(self, page: Tuple[str, str], records: Dict[str, dict]) -> None:
        kind, name = page
        key = [self.namespace, PAGED[kind], name]
        self._unsure.add(page)  # until lightningd answers: a lost answer may hide a write
        if records:
            text = encode_page(records)
            self._write(key, text)
            self._pages[page] = text
        else:
            self._delete(key)
            self._pages.pop(page, None)
        self._unsure.discard(page)

    def _drop_legacy(self, kind: str, key: str) -> None:
        if key in self._legacy[kind]:
            self._delete([self.namespace, kind, key])
            del self._legacy[kind][key]

    def _write(self, key: List[str], text: str) -> None:
        self.rpc.call("datastore", {"key": key, "string": text, "mode": "create-or-replace"})

    def _delete(self, key: List[str]) -> None:
        try:
            self.rpc.call("deldatastore", {"key": key})
        except RpcError as e:  # gone already: an earlier deletion whose answer was lost
            if (e.error or {}).get("code") != DEL_DOES_NOT_EXIST:
                raise

