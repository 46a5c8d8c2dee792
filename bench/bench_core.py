"""`make bench`, part 2: the holding core (asyncln.hold.Relay) at 100,000 held, no stdio.

Each figure is the median of a few rounds within one run:

* admission: one htlc_accepted that carries an asyncln record and is held,
  with 100,000 payments already held, and the same at 100 held (their ratio
  should be ~1: admission only reads running totals);
* reading a version-2 onion (peel.read) beside reading the clear record:
  the cost of privacy on the hook path;
* block() with nothing due, at 100,000 held (it should only peek at the
  heaps of due heights);
* the poll round that makes all 100,000 due, as the shell runs it
  (holder_shell.check_chain, then one worker job per slice, over a stand-in
  for lightningd's RPC): the longest single hold of the shell's lock, which
  every HTLC on the hook path waits behind, and the whole round's time;
* restart recovery: 100,000 records in the store's pages through
  Store.records, HeldPayment.from_json and a new Relay, as Node.__init__
  does (the real node's figure, listdatastore included, is
  bench/bench_recovery.py's);
* a save (Store.put, the RPC a stand-in): one record's page read, changed
  and written at 100,000 held (about 25 records a page) against 100 held
  (one a page): what paging costs each write.

No asserts on time: the figures are printed beside their targets.
"""

import gc
import hashlib
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from factories import node_id, payload, record  # noqa: E402
from test_node import RecordingRpc  # noqa: E402

from asyncln import holder_shell, onion, peel  # noqa: E402
from asyncln.hold import FindRoute, Hold, HeldPayment, Incoming, Relay  # noqa: E402
from asyncln.layer import Layer  # noqa: E402
from asyncln.node import Node  # noqa: E402
from asyncln.policy import Policy  # noqa: E402
from asyncln.record import TrampolineRecord, find_record  # noqa: E402
from asyncln.store import PAGED, Store, encode_page, page_of  # noqa: E402

ROUNDS = 5
HELD = 100_000
FEW = 100
ADMISSION_ROUNDS = 7
ADMIT_PER_ROUND = 500
BLOCKS_PER_ROUND = 400
RECOVERY_ROUNDS = 3
LOCK_TARGET_MS = 50
NODES = 100                 # distinct recipients the held payments wait for
HEIGHT = 1000
CLTV_EXPIRY = 4000
AMOUNT, INCOMING_MSAT = 100_000, 110_000
PEER = node_id(1)

# Caps out of the way; polls far enough apart that the blocks timed below wake nothing.
POLICY = Policy(poll_blocks=500, max_hold_blocks=2000, max_held=10**6, max_held_msat=10**15,
                max_held_per_peer=10**6, max_held_msat_per_peer=10**15)
PAYLOADS = [payload(record(amount=AMOUNT, node=node_id(10 + n)), INCOMING_MSAT, CLTV_EXPIRY)
            for n in range(NODES)]


def hook(i):
    """The arguments of the i-th distinct held HTLC: own hash, own HTLC, one of NODES recipients."""
    payment_hash = hashlib.sha256(i.to_bytes(8, "big")).hexdigest()
    incoming = Incoming(channel="103x1x0", htlc_id=i, amount_msat=INCOMING_MSAT,
                        cltv_expiry=CLTV_EXPIRY, peer=PEER, shared_secret=f"{i:064x}")
    return payment_hash, incoming, PAYLOADS[i % NODES], INCOMING_MSAT, CLTV_EXPIRY


def settled_relay(count):
    """A relay holding ``count`` payments whose first route searches all failed (nodes offline)."""
    relay = Relay(POLICY, HEIGHT)
    for i in range(count):
        verdict, actions = relay.htlc_accepted(*hook(i))
        assert verdict == Hold(), verdict
        for action in actions:
            if isinstance(action, FindRoute):
                relay.route_failed(action.payment_hash, "Unknown destination")
    assert len(relay.held) == count and not relay.searching, (len(relay.held), len(relay.searching))
    return relay


def admission_us(held, calls):
    """The cost of one held htlc_accepted, on a fresh relay already holding ``held``."""
    relay = Relay(POLICY, HEIGHT, held)
    gc.collect()
    start = time.perf_counter()
    for call in calls:
        relay.htlc_accepted(*call)
    elapsed = time.perf_counter() - start
    assert len(relay.held) == len(held) + len(calls)
    return elapsed / len(calls) * 1e6


def parsing_us(calls):
    """The part of admission that reads the onion: find_record + TrampolineRecord.decode."""
    start = time.perf_counter()
    for call in calls:
        TrampolineRecord.decode(find_record(call[2])[1])
    return (time.perf_counter() - start) / len(calls) * 1e6


def peeling_us(calls):
    """Reading a version-2 onion instead (peel.read: find it, one ECDH, decrypt, decode)."""
    secret = onion.secret_key("11" * 32)
    key = onion.public_key("11" * 32)
    packets = []
    for payment_hash, incoming, raw, _, _ in calls:
        rec = TrampolineRecord.decode(find_record(raw)[1])
        layer = Layer(amt_to_forward=rec.amount_msat, outgoing_cltv_delta=rec.final_cltv_delta,
                      outgoing_node_id=rec.next_node, payment_secret=rec.payment_secret,
                      total_msat=rec.total_msat, max_hold_blocks=100)
        packet, _ = onion.build([(key, layer)], payment_hash)
        packets.append((onion.final_payload(INCOMING_MSAT, CLTV_EXPIRY, packet), payment_hash,
                        incoming))
    start = time.perf_counter()
    for payload_v2, payment_hash, incoming in packets:
        peel.read(payload_v2, payment_hash, secret, PEER, POLICY, incoming, HEIGHT)
    return (time.perf_counter() - start) / len(packets) * 1e6


def idle_block_ms(held):
    """Median over rounds of one block() that wakes nothing, at ``len(held)`` held."""
    samples = []
    for _ in range(ROUNDS):
        relay = Relay(POLICY, HEIGHT, held)
        gc.collect()
        start = time.perf_counter()
        for height in range(HEIGHT + 1, HEIGHT + 1 + BLOCKS_PER_ROUND):
            actions = relay.block(height)
            assert not actions, actions
        samples.append((time.perf_counter() - start) / BLOCKS_PER_ROUND * 1e3)
    return statistics.median(samples)


class TimedLock:
    """The shell's RLock, timing each outermost hold."""

    def __init__(self):
        self.lock, self.depth, self.since, self.holds = threading.RLock(), 0, 0.0, []

    def __enter__(self):
        self.lock.acquire()
        self.depth += 1
        if self.depth == 1:
            self.since = time.perf_counter()

    def __exit__(self, *exc):
        self.depth -= 1
        if self.depth == 0:
            self.holds.append(time.perf_counter() - self.since)
        self.lock.release()


def poll_round(held):
    """(longest lock hold in ms, whole round in s) of the shell's round that makes all due.

    The shell as it runs: check_chain at the poll height, then the worker's
    queued jobs (the slices, and the route searches, which fail: the
    recipients are offline) until none is left.
    """
    tip = HEIGHT + POLICY.poll_blocks
    rpc = RecordingRpc(getchaininfo={"headercount": tip, "blockcount": tip, "ibd": False},
                       waitblockheight={"blockheight": tip})
    node = Node(rpc, lambda *a, **k: None, POLICY)
    node.relay = Relay(POLICY, HEIGHT, held)
    lock = node.lock = TimedLock()
    gc.collect()
    holder_shell.settle_memory()  # as Node.__init__ does after recovery
    start = time.perf_counter()
    node.check_chain()
    while node._jobs:
        node._jobs.popleft()()
    elapsed = time.perf_counter() - start
    woken = sum(h.attempts == 2 for h in node.relay.held.values())
    assert woken == len(held) and not node.relay.has_due(), woken
    return max(lock.holds) * 1e3, elapsed


class Datastore:
    """The datastore calls Store makes, answered from memory."""

    def __init__(self, entries=()):
        self.entries = list(entries)

    def call(self, method, params):
        key = params["key"]
        if method == "listdatastore":
            return {"datastore": [e for e in self.entries if e["key"][:len(key)] == key]}
        return {}


def paged(records):
    """The datastore entries Store.put leaves for ``records``: one per page."""
    pages = {}
    for held in records:
        pages.setdefault(page_of(held.payment_hash), {})[held.payment_hash] = held.to_json()
    return [{"key": ["asyncln", PAGED["held"], page], "string": encode_page(page_records)}
            for page, page_records in pages.items()]


def recovery_s(entries):
    """Median over rounds of Store.records + HeldPayment.from_json + Relay() for every record."""
    samples = []
    for _ in range(RECOVERY_ROUNDS):
        gc.collect()
        start = time.perf_counter()
        with holder_shell.collector_paused():  # as Node.__init__ recovers
            relay = Relay(POLICY, HEIGHT, (HeldPayment.from_json(value) for _, value
                                           in Store(Datastore(entries)).records("held")))
        samples.append(time.perf_counter() - start)
        assert len(relay.held) == HELD
    return statistics.median(samples)


def save_us(records):
    """Median µs of Store.put for a sample of ``records``, all of them already saved."""
    store = Store(Datastore(paged(records)))
    store.load("held")
    sample = records[::max(1, len(records) // 500)]
    start = time.perf_counter()
    for held in sample:
        store.put("held", held.payment_hash, held.to_json())
    return (time.perf_counter() - start) / len(sample) * 1e6


def main():
    big = list(settled_relay(HELD).held.values())
    few = big[:FEW]
    # What Store.put wrote for the records: the pages lightningd's datastore hands back.
    entries = paged(big)

    # Rounds alternate between the two sizes, so the machine's noise hits both alike.
    calls = [hook(i) for i in range(HELD, HELD + ADMIT_PER_ROUND)]
    many, fewer, parsing = [], [], []
    for _ in range(ADMISSION_ROUNDS):
        many.append(admission_us(big, calls))
        fewer.append(admission_us(few, calls))
        parsing.append(parsing_us(calls))
    peeling = peeling_us(calls)
    at_many, at_few = statistics.median(many), statistics.median(fewer)
    block_ms = idle_block_ms(big)
    longest_ms, round_s = poll_round(big)
    recovery = recovery_s(entries)
    saves = [(save_us(big), save_us(few)) for _ in range(ROUNDS)]
    save_many, save_few = (statistics.median(column) for column in zip(*saves))

    print()
    print(f"Holding core (asyncln.hold.Relay, no stdio), {HELD:,} held for {NODES} offline nodes, "
          f"median of {ADMISSION_ROUNDS} rounds (admission) or {ROUNDS} (block), one run:")
    show(f"admission (a held htlc_accepted) at {HELD:,} held", at_many, "us", "<=", 50)
    show("  of which reading the record (find_record, decode)", statistics.median(parsing), "us")
    show("  reading a version-2 onion instead (peel.read)", peeling, "us")
    print(f"  {'  ratio onion / clear record':52} {peeling / statistics.median(parsing):9.1f}"
          f"      (one ECDH and a ChaCha20 pass per HTLC carrying the onion)")
    show(f"admission at {FEW} held", at_few, "us")
    print(f"  {'admission ratio ' + f'{HELD:,} held / {FEW} held':52} {at_many / at_few:9.2f}"
          f"      target ~1 (O(1) admission)")
    show(f"block() with nothing due at {HELD:,} held", block_ms, "ms", "<=", 1, digits=4)
    print()
    print(f"The poll round that makes all {HELD:,} due, as holder_shell runs it "
          f"(slices of {holder_shell.DUE_SLICE}), one run:")
    show("longest single hold of the shell's lock", longest_ms, "ms", "<=", LOCK_TARGET_MS)
    show("  for scale: the whole round, route searches included", round_s, "s", digits=2)
    print()
    print(f"Restart recovery of {HELD:,} held records, median of {RECOVERY_ROUNDS} rounds, one run:")
    show("Store.records + HeldPayment.from_json + Relay()", recovery, "s", "<", 5, digits=3)
    print("  (on a real node, listdatastore included: bench/bench_recovery.py)")
    print()
    print(f"A save (Store.put: its page read, changed and written; RPC excluded), "
          f"median of {ROUNDS} rounds, one run:")
    show(f"at {HELD:,} held ({HELD // len(entries)} records a page)", save_many, "us")
    show(f"at {FEW} held (one a page)", save_few, "us")
    print(f"  {'ratio':52} {save_many / save_few:9.1f}"
          f"      (grows with records per page: PAGE_DIGITS)")


def show(label, value, unit, relation=None, target=None, digits=1):
    line = f"  {label:52} {value:9.{digits}f} {unit:2}"
    if target is not None:
        met = value <= target if relation == "<=" else value < target
        line += f"   target {relation} {target} {unit}  ({'met' if met else 'MISSED'})"
    print(line)


if __name__ == "__main__":
    main()
