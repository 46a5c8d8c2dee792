"""Held records kept many to a datastore entry (asyncln/store.py's pages).

What must hold whatever fails: a restart reads, for every record, the value
last known to be on disk or one the store tried to write after it, never an
older one. In particular a record kept under its own key by an older
version never comes back once its page says otherwise.
"""

import itertools
import json
import threading
from collections import Counter, defaultdict

import pytest
from pyln.client import RpcError
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln.store import PAGE_DIGITS, Store, decode_page, encode_page, page_of


def keys_in_pages(pages: int, per_page: int, secret: bytes = b"") -> list:
    """Hash-like keys, ``per_page`` in each of ``pages`` pages under ``secret``, page by page:
    what a payer grinding payment hashes could make, knowing the secret."""
    found, full = defaultdict(list), []
    for n in itertools.count():
        key = f"{n:064x}"
        keys = found[page_of(key, secret=secret)]
        keys.append(key)
        if len(keys) == per_page:
            full.append(keys)
            if len(full) == pages:
                return [key for keys in full for key in keys]


# A few pages, several keys to a page (the stores here have the empty secret).
KEYS = keys_in_pages(2, 3)


class Datastore:
    """lightningd's datastore, as the store calls it, that can fail a call on request.

    ``fail`` holds the calls to fail, by their number; a failed call either
    changed nothing ("before") or changed the datastore and lost its answer ("after").
    """

    def __init__(self):
        self.entries = {}   # key tuple -> string
        self.calls = []
        self.fail = {}      # call number -> "before" | "after"
        self.broken = set() # keys every change to fails, "before"

    def call(self, method, params):
        self.calls.append((method, params))
        how = self.fail.pop(len(self.calls) - 1, None)
        if method != "listdatastore" and tuple(params["key"]) in self.broken:
            how = "before"
        if how == "before":
            raise OSError(f"{method} broke")
        key = tuple(params["key"])
        match method:
            case "datastore":
                self.entries[key] = params["string"]
            case "deldatastore":
                if self.entries.pop(key, None) is None:
                    raise RpcError(method, params, {"code": 1200, "message": "Key does not exist"})
            case "listdatastore":
                # bytes: a value that is not UTF-8, which lightningd lists without a string
                return {"datastore": [{"key": list(k), **({} if isinstance(v, bytes) else {"string": v})}
                                      for k, v in sorted(self.entries.items()) if k[:len(key)] == key]}
        if how == "after":
            raise OSError(f"{method}'s answer was lost")
        return {}


def legacy(ds, key, value):
    """A record as versions before pages stored it: under its own key."""
    ds.entries[("asyncln", "held", key)] = json.dumps(value)


def loaded(ds):
    store = Store(ds)
    return store, store.load("held")


# --- the page codec ------------------------------------------------------------------

records = st.dictionaries(st.text(max_size=8), st.dictionaries(st.text(max_size=4), st.integers()),
                          max_size=5)


@given(records)
def test_a_page_reads_back_what_was_written(page):
    assert decode_page(encode_page(page)) == page


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.hex())))
def test_anything_that_is_not_a_page_is_a_value_error(text):
    try:
        assert isinstance(decode_page(text), dict)
    except ValueError:
        pass


@pytest.mark.parametrize("inside", [b"[1]", b'{"a": 1}', b"not json", b"\xff\xfe"])
def test_a_compressed_page_must_hold_objects_of_records(inside):
    import base64
    import zlib
    with pytest.raises(ValueError):
        decode_page(base64.b64encode(zlib.compress(inside)).decode())


# --- the store ------------------------------------------------------------------------

def test_records_sharing_a_page_are_one_entry_and_each_write_is_one_call():
    ds = Datastore()
    store, _ = loaded(ds)
    for n, key in enumerate(KEYS):
        store.put("held", key, {"n": n})
    assert [m for m, _ in ds.calls[2:]] == ["datastore"] * len(KEYS)  # after load's two lists
    assert sorted(ds.entries) == sorted([("asyncln", "heldpage", page_of(KEYS[0])),
                                         ("asyncln", "heldpage", page_of(KEYS[-1]))])
    assert loaded(ds)[1] == {key: {"n": n} for n, key in enumerate(KEYS)}
    for key in KEYS:
        store.delete("held", key)
    assert ds.entries == {} and loaded(ds)[1] == {}


def test_other_kinds_keep_a_key_each():
    ds = Datastore()
    store = Store(ds)
    store.put("pay", KEYS[0], {"a": 1})
    assert ds.entries == {("asyncln", "pay", KEYS[0]): '{"a": 1}'}
    assert store.load("pay") == {KEYS[0]: {"a": 1}} and store.get("pay", KEYS[0]) == {"a": 1}


def test_an_older_versions_records_load_and_leave_their_own_keys_once_paged():
    ds = Datastore()
    legacy(ds, KEYS[0], {"v": "old"})
    legacy(ds, KEYS[1], {"v": "old"})
    store, found = loaded(ds)
    assert found == {KEYS[0]: {"v": "old"}, KEYS[1]: {"v": "old"}}
    assert store.get("held", KEYS[0]) == {"v": "old"}
    store.put("held", KEYS[0], {"v": "new"})
    # The page first, then the old key: a crash between leaves both, and the page wins.
    assert [(m, p["key"][1]) for m, p in ds.calls[2:]] == [("datastore", "heldpage"),
                                                          ("deldatastore", "held")]
    store.delete("held", KEYS[1])  # never paged: its own key goes, no page is written
    assert [(m, p["key"][1]) for m, p in ds.calls[4:]] == [("deldatastore", "held")]
    assert ds.entries.keys() == {("asyncln", "heldpage", page_of(KEYS[0]))}
    assert loaded(ds)[1] == {KEYS[0]: {"v": "new"}}


def test_a_page_wins_over_an_old_key_left_by_a_crash():
    ds = Datastore()
    legacy(ds, KEYS[0], {"v": "old"})
    store, _ = loaded(ds)
    ds.fail[len(ds.calls) + 1] = "before"  # the old key's deletion
    with pytest.raises(OSError):
        store.put("held", KEYS[0], {"v": "new"})
    assert loaded(ds)[1] == {KEYS[0]: {"v": "new"}}


def test_forgetting_a_paged_record_whose_old_key_is_left_never_brings_the_old_copy_back():
    """A record paged while its old key could not be deleted, then forgotten: were the
    page written first and the old key's deletion then failed, a restart would read the
    old copy, a state from before the upgrade, for an HTLC already settled."""
    ds = Datastore()
    legacy(ds, KEYS[0], {"state": "held"})
    store, _ = loaded(ds)
    ds.broken.add(("asyncln", "held", KEYS[0]))  # the old key cannot be deleted
    with pytest.raises(OSError):
        store.put("held", KEYS[0], {"state": "failed"})
    with pytest.raises(OSError):
        store.delete("held", KEYS[0])
    assert loaded(ds)[1] == {KEYS[0]: {"state": "failed"}}


def test_an_old_key_whose_deletion_lost_its_answer_does_not_block_later_writes():
    ds = Datastore()
    legacy(ds, KEYS[0], {"v": "old"})
    store, _ = loaded(ds)
    ds.fail[len(ds.calls) + 1] = "after"  # deleted, but the answer is lost
    with pytest.raises(OSError):
        store.put("held", KEYS[0], {"v": 1})
    store.put("held", KEYS[0], {"v": 2})  # lightningd: "Key does not exist" (1200), which is fine
    assert loaded(ds)[1] == {KEYS[0]: {"v": 2}}


def test_forgetting_a_record_whose_write_lost_its_answer_rewrites_its_page():
    ds = Datastore()
    store, _ = loaded(ds)
    ds.fail[len(ds.calls)] = "after"  # on disk, but the store never heard so
    with pytest.raises(OSError):
        store.put("held", KEYS[0], {"state": "failed"})
    store.delete("held", KEYS[0])
    assert loaded(ds)[1] == {}


def test_an_unreadable_page_is_reported_and_never_written_over():
    ds = Datastore()
    ds.entries[("asyncln", "heldpage", page_of(KEYS[0]))] = "not a page"
    store, found = loaded(ds)
    assert found == {} and (("held", page_of(KEYS[0]))) in store.unreadable
    for change in (lambda: store.put("held", KEYS[1], {}), lambda: store.delete("held", KEYS[1])):
        with pytest.raises(ValueError, match="unreadable"):
            change()
    assert ds.entries[("asyncln", "heldpage", page_of(KEYS[0]))] == "not a page"
    store.put("held", KEYS[-1], {"other": "page"})  # the other pages still work
    assert store.get("held", KEYS[-1]) == {"other": "page"}


def test_nothing_is_written_before_the_pages_are_read():
    store = Store(Datastore())
    with pytest.raises(RuntimeError):
        store.put("held", KEYS[0], {})


def test_writers_of_one_page_never_lose_each_others_records():
    ds = Datastore()
    store, _ = loaded(ds)
    keys = keys_in_pages(1, 40)
    threads = [threading.Thread(target=store.put, args=("held", key, {"n": n}))
               for n, key in enumerate(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loaded(ds)[1] == {key: {"n": n} for n, key in enumerate(keys)}


# --- the property ---------------------------------------------------------------------

ops = st.lists(st.tuples(st.sampled_from(["put", "delete", "restart"]), st.sampled_from(KEYS),
                         st.sampled_from([None, None, "before", "after"]), st.integers(0, 1)),
               max_size=25)


@settings(max_examples=400, deadline=None)
@given(old=st.sets(st.sampled_from(KEYS)), steps=ops)
def test_a_restart_never_reads_a_record_older_than_the_last_it_knew_was_saved(old, steps):
    """For every key, the values a restart may read: the one the store last saw saved, or
    one it tried to write after (a failed call may or may not have changed the datastore)."""
    ds = Datastore()
    possible = {}  # key -> the values a restart may read (None: no record)
    for key in KEYS:
        if key in old:
            legacy(ds, key, {"v": "legacy"})
        possible[key] = [{"v": "legacy"} if key in old else None]
    store, _ = loaded(ds)
    for n, (op, key, how, which) in enumerate(steps):
        if op == "restart":
            store, found = loaded(ds)
            for k in KEYS:
                assert found.get(k) in possible[k], (k, found.get(k), possible[k])
                possible[k] = [found.get(k)]
            continue
        value = {"v": n} if op == "put" else None
        if how:  # fail the op's first or second datastore call
            ds.fail[len(ds.calls) + which] = how
        try:
            store.put("held", key, value) if op == "put" else store.delete("held", key)
        except OSError:
            possible[key].append(value)
        else:
            possible[key] = [value]
        ds.fail.clear()
    store, found = loaded(ds)
    for k in KEYS:
        assert found.get(k) in possible[k], (k, found.get(k), possible[k])


@pytest.mark.parametrize("digits", [PAGE_DIGITS - 1, PAGE_DIGITS + 1])
def test_a_new_page_size_never_brings_back_an_older_copy(monkeypatch, digits):
    """README invites a larger PAGE_DIGITS: a node upgraded to it must not keep a record's
    older copy in a page of the old size, to win at a restart or to outlive its Forget."""
    import asyncln.store as store_module
    ds = Datastore()
    store, _ = loaded(ds)
    store.put("held", KEYS[0], {"v": "old"})
    store.put("held", KEYS[3], {"v": "kept"})
    monkeypatch.setattr(store_module, "PAGE_DIGITS", digits)
    store, found = loaded(ds)
    assert found == {KEYS[0]: {"v": "old"}, KEYS[3]: {"v": "kept"}}
    store.put("held", KEYS[0], {"v": "new"})
    store, found = loaded(ds)
    assert found == {KEYS[0]: {"v": "new"}, KEYS[3]: {"v": "kept"}}
    store.delete("held", KEYS[0])
    assert loaded(ds)[1] == {KEYS[3]: {"v": "kept"}}


def test_a_page_that_is_not_text_is_never_written_over():
    """lightningd lists a value that is not UTF-8 without its string: such a page was skipped
    as if absent, and the next save in it replaced it and every record it held."""
    ds = Datastore()
    ds.entries[("asyncln", "heldpage", page_of(KEYS[0]))] = b"\xff\xfe"
    store, found = loaded(ds)
    assert found == {} and ("held", page_of(KEYS[0])) in store.unreadable
    with pytest.raises(ValueError, match="unreadable"):
        store.put("held", KEYS[1], {})
    assert ds.entries[("asyncln", "heldpage", page_of(KEYS[0]))] == b"\xff\xfe"


def test_hashes_ground_into_one_page_spread_over_the_pages_of_a_node_with_its_secret():
    """Payers choose payment hashes: without the node's secret they can crowd one page, and
    each save rewrites its whole page (0.3 s at 10,000). Named with the secret, the page
    they aimed at (the empty secret's, or before pages were keyed, the first digits) is
    not the one the node writes."""
    ground = keys_in_pages(1, 40)
    store = Store(Datastore(), secret=bytes(range(32)))
    pages = Counter(store.page("held", key) for key in ground)
    assert len(pages) > 30 and max(pages.values()) <= 3
