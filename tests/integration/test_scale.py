"""Issue 13 item 2 on a real node: recovery of 100,000 held records, listdatastore included.

S's datastore gets 100,000 held records in the holder store's own layout and
JSON (asyncln/store.py, HeldPayment.to_json), each with its own random
payment hash, payment secret and onion shared secret, as real ones have:
* 99,000 in pages (``["asyncln", "heldpage", <3 hex digits>]``, named as S's
  store names them, with S's secret), written
  straight into lightningd's sqlite3 database while S is stopped;
* 1,000 under their own keys, as versions before pages wrote them, through
  the ``datastore`` RPC: an upgraded node reads both.
Half are version 2 (the default when the holder announces an onion key):
their 1,366-byte onions sit under ``["asyncln", "onion", <hash>]``, which a
restart does not list.
Then S starts, and the test reads the plugin's "recovered N held records in
T s" line: the time from Node's start to a rebuilt relay, listdatastore and
parsing included.

The records' HTLCs do not exist: lightningd never replays them. Such a
record stays held, answering nothing, until its give-up height (far ahead
here), is then marked failed and forgotten at cltv_expiry + 1: there is no
HTLC to lose, and nothing is written or sent at startup.

With ASYNCLN_SCALE_RESULT set, the figures go to that file as JSON:
bench/bench_recovery.py runs this test and prints them.
"""

import json
import os
import random
import sqlite3
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from factories import node_id, record
from helpers import opts

from asyncln.hold import HeldPayment, Incoming
from asyncln.states import HoldState
from asyncln.store import ONION_SAVED, PAGED, decode_page, encode_page, list_all, page_of, page_secret

RECORDS = 100_000
BY_RPC = 1_000          # under their own keys, through the datastore RPC: the older layout
TARGET_SECONDS = 5      # issue 13's target, which bench/bench_recovery.py prints beside the figure
# What the test asserts: well inside the 60 s lightningd gives a plugin to answer init,
# after which it kills the plugin (and fails the HTLCs it held).
INIT_LIMIT_SECONDS = 30
RECIPIENTS = [node_id(10 + n) for n in range(100)]


def seeded(i, height, rng):
    """A held record like Store.put writes: far from its give-up height, no payer to notify.
    Every other one is version 2, its onion kept under its own key (HolderShell.paged)."""
    payment_hash = rng.randbytes(32).hex()
    incoming = Incoming(channel="1x1x1", htlc_id=i, amount_msat=110_000,
                        cltv_expiry=height + 3000, peer=node_id(1),
                        shared_secret=rng.randbytes(32).hex(), channel_id="ab" * 32)
    held = HeldPayment(payment_hash, incoming,
                       replace(record(node=RECIPIENTS[i % len(RECIPIENTS)], report_to=None),
                               payment_secret=rng.randbytes(32).hex(),
                               next_onion=ONION_SAVED if i % 2 else None),
                       hold_start=height, give_up_height=height + 2000,
                       next_poll_height=height + 2000, attempts=1,
                       state=HoldState.HELD, attached=False)
    return payment_hash, held.to_json()


@pytest.mark.skipif(os.environ.get("TEST_DB_PROVIDER", "sqlite3") != "sqlite3",
                    reason="seeds lightningd's sqlite3 database directly")
def test_recovery_at_scale(node_factory, plugin_path):
    options = {k: v for k, v in opts(plugin_path).items() if k != "may_reconnect"}
    # lightningd says a listdatastore of 100,000 entries is slow: that is what is measured.
    s = node_factory.get_node(options=options,
                              broken_log=r"That's weird: Request listdatastore took")
    height = s.rpc.getinfo()["blockheight"]
    rng = random.Random(13)
    records = [seeded(i, height, rng) for i in range(RECORDS)]

    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: s.rpc.datastore(key=["asyncln", "held", r[0]],
                                                string=json.dumps(r[1], sort_keys=True)),
                      records[:BY_RPC]))
    by_rpc = time.monotonic() - start

    pages = defaultdict(dict)
    secret = page_secret(s.rpc)  # S's pages are named with it
    for payment_hash, data in records[BY_RPC:]:
        pages[page_of(payment_hash, secret=secret)][payment_hash] = data
    s.stop()
    start = time.monotonic()
    with sqlite3.connect(s.db.path) as db:  # datastore's key: its parts joined by NUL bytes
        db.executemany("INSERT INTO datastore VALUES (?, ?, 0)",
                       ((f"asyncln\0{PAGED['held']}\0{page}".encode(), encode_page(data).encode())
                        for page, data in pages.items()))
        db.executemany("INSERT INTO datastore VALUES (?, ?, 0)",  # the onions, not listed
                       ((f"asyncln\0onion\0{h}".encode(),
                         json.dumps({"onion": rng.randbytes(1366).hex()}).encode())
                        for h, data in records if data["record"].get("next_onion")))
    by_sql = time.monotonic() - start

    start = time.monotonic()
    s.start()
    recovered = r"recovered [1-9]\d* held records in [\d.]+ s"
    wall = time.monotonic() - start
    line = s.daemon.is_in_log(recovered)  # lightningd's start waited for the init answer
    assert line is not None
    count, seconds = line.split("recovered ")[1].split(" held records in ")
    count, seconds = int(count), float(seconds.split(" s")[0])

    slow = s.daemon.is_in_log(r"Request listdatastore took \d+ milliseconds")
    listing = int(slow.split(" took ")[1].split()[0]) / 1000 if slow else None
    listed = (len(list_all(s.rpc, ["asyncln", "held"]))  # pyln's own reader is slow here
              + sum(len(decode_page(e["string"])) for e in list_all(s.rpc, ["asyncln", PAGED["held"]])))

    figures = {"records": count, "recovery_s": seconds, "start_to_recovered_s": wall,
               "lightningd_listdatastore_s": listing, "target_s": TARGET_SECONDS, "seed_rpc_per_record_ms": by_rpc / BY_RPC * 1e3,
               "seed_rpc_records": BY_RPC, "seed_sql_s": by_sql, "pages": len(pages)}
    print(f"\nscale: {json.dumps(figures)}")
    if os.environ.get("ASYNCLN_SCALE_RESULT"):
        with open(os.environ["ASYNCLN_SCALE_RESULT"], "w") as out:
            json.dump(figures, out)
    assert count == listed == RECORDS
    # Nothing owed and nothing due: no write, no answer, no failure at startup.
    assert not s.daemon.is_in_log(r"held payment [0-9a-f]{64}: failed")
    assert seconds < INIT_LIMIT_SECONDS, figures
