"""BOLT 4 Sphinx onions with a configurable payload size, and their error onions.

asyncln carries per-holder instructions in an onion of its own (the
trampoline idea of bolts PR #836), addressed to each holder's asyncln key and
riding as a TLV value inside lightningd's 1300-byte onion. That inner onion
must be smaller than 1300 bytes, so the size is a parameter here; with 1300
this is byte for byte the BOLT 4 onion.

From pyln-proto's ``onion`` module we reuse ``generate_key`` (the HMAC key
derivation, e.g. ``rho``/``mu``). The ChaCha20 stream is our own (``_xor``):
pyln-proto's ``chacha20_stream`` encrypts in place with ``update_into(buf, buf)``,
which cryptography 51 refuses, and no money path may hang on such a trick. Its ``RoutingOnion``/``SphinxPath`` do not fit: the payload
size is the module constant ``ROUTING_INFO_SIZE`` = 1300 in their asserts,
parsing and filler; ``SphinxPath`` sizes the filler from ``hops[1:]`` instead
of ``hops[:-1]``, so with unequal payloads it does not reproduce the BOLT 4
vector; unwrapping returns pyln payload objects (treating 0x00 as a legacy
payload) rather than the raw TLV stream, skips the version check and raises
bare ``ValueError``/``AssertionError``. Its ``blind``/``ecdh`` helpers
wrap pyln key types, so coincurve does the EC math directly. pyln-proto has no
error onions at all. BOLT 4's ``attribution_data`` is not implemented.
"""

import hashlib
import hmac
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from coincurve import PrivateKey, PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from pyln.proto.onion import generate_key

from .wire import DecodeError, decode_bigsize, is_point

ONION_VERSION = 0
HMAC_LEN = 32
_KEY_LEN = 33


class OnionError(DecodeError):
    """An onion or error packet that we must not act on."""


def _xor(key: bytes, data: bytes) -> bytearray:
    """``data`` XOR the ChaCha20 stream of ``key`` (BOLT 4: a zero 96-bit nonce, counter 0)."""
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return bytearray(encryptor.update(bytes(data)))


def _stream(key: bytes, length: int) -> bytearray:
    return _xor(key, bytes(length))


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


@dataclass(frozen=True)
class Packet:
    version: int
    public_key: bytes
    payloads: bytes
    hmac: bytes

    def serialize(self) -> bytes:
        return bytes([self.version]) + self.public_key + self.payloads + self.hmac

    @classmethod
    def parse(cls, raw: bytes, payload_size: int) -> "Packet":
        """Only the size is checked; ``peel`` checks version, key and HMAC in BOLT 4 order."""
        if len(raw) != 1 + _KEY_LEN + payload_size + HMAC_LEN:
            raise OnionError(f"onion is {len(raw)} bytes, not {1 + _KEY_LEN + payload_size + HMAC_LEN}")
        end = 1 + _KEY_LEN + payload_size
        return cls(raw[0], bytes(raw[1:1 + _KEY_LEN]), bytes(raw[1 + _KEY_LEN:end]), bytes(raw[end:]))


@dataclass(frozen=True)
class Peeled:
    payload: bytes
    next_packet: Optional[Packet]
    shared_secret: bytes


def _blind(public_key: bytes, shared_secret: bytes) -> bytes:
    """The factor that turns this hop's ephemeral key into the next hop's."""
    return hashlib.sha256(public_key + shared_secret).digest()


def _check_hop_payload(payload: bytes) -> None:
    try:
        length, start = decode_bigsize(payload)
    except DecodeError as e:
        raise ValueError(f"hop payload has a bad length prefix: {e}") from None
    if start + length != len(payload):
        raise ValueError("hop payload length prefix does not match its size")


def create_onion(session_key: bytes, hops: Sequence[Tuple[bytes, bytes]], assocdata: bytes,
                 payload_size: int = 1300) -> Tuple[Packet, List[bytes]]:
    """Build the onion for ``hops`` (pubkey, length-prefixed payload); return it and each hop's shared secret."""
    if not hops:
        raise ValueError("an onion needs at least one hop")
    for pubkey, payload in hops:
        if not is_point(pubkey):
            raise ValueError("hop public key is not a valid point")
        _check_hop_payload(payload)
    shifts = [len(payload) + HMAC_LEN for _, payload in hops]
    if sum(shifts) > payload_size:
        raise ValueError(f"hop payloads need {sum(shifts)} bytes, the onion has {payload_size}")

    ephemeral = PrivateKey(session_key)
    first_key = ephemeral.public_key.format()
    secrets = []
    for pubkey, _ in hops:
        secret = ephemeral.ecdh(pubkey)
        secrets.append(secret)
        ephemeral = ephemeral.multiply(_blind(ephemeral.public_key.format(), secret))
    rhos = [generate_key(secret, b"rho") for secret in secrets]

    # The filler is what the earlier hops' shifts push in at the end, so the
    # last hop's HMAC covers exactly the bytes it will receive.
    filler = bytearray()
    for rho, shift in zip(rhos[:-1], shifts[:-1]):
        filler += bytes(shift)
        stream = _stream(rho, payload_size + shift)
        filler = bytearray(a ^ b for a, b in zip(filler, stream[-len(filler):]))

    # Random rather than zero padding, so the last hop cannot tell the route length.
    buf = _stream(generate_key(session_key, b"pad"), payload_size)
    next_hmac = bytes(HMAC_LEN)
    for i in reversed(range(len(hops))):
        buf = _xor(rhos[i], (hops[i][1] + next_hmac + buf)[:payload_size])
        if i == len(hops) - 1:
            buf[payload_size - len(filler):] = filler
        next_hmac = _mac(generate_key(secrets[i], b"mu"), buf, assocdata)
    return Packet(ONION_VERSION, first_key, bytes(buf), next_hmac), secrets


def peel(packet: Packet, private_key: bytes, assocdata: bytes) -> Peeled:
    """Check and decrypt our layer; return our TLV stream and the packet for the next hop."""
    if packet.version != ONION_VERSION:
        raise OnionError(f"unknown onion version {packet.version}")
    if not is_point(packet.public_key):
        raise OnionError("onion ephemeral key is not a valid point")
    secret = PrivateKey(private_key).ecdh(packet.public_key)
    if not hmac.compare_digest(_mac(generate_key(secret, b"mu"), packet.payloads, assocdata), packet.hmac):
        raise OnionError("onion HMAC mismatch")

    size = len(packet.payloads)
    # Zeros appended before decrypting become the stream bytes the creator's filler expects.
    buf = _xor(generate_key(secret, b"rho"), packet.payloads + bytes(size))
    try:
        length, start = decode_bigsize(buf)
    except DecodeError as e:
        raise OnionError(f"bad hop payload length: {e}", offset=e.offset) from None
    end = start + length
    if end + HMAC_LEN > size:
        raise OnionError("hop payload overruns the onion", offset=start)
    next_hmac = bytes(buf[end:end + HMAC_LEN])
    if next_hmac == bytes(HMAC_LEN):
        return Peeled(bytes(buf[start:end]), None, secret)
    next_key = PublicKey(packet.public_key).multiply(_blind(packet.public_key, secret)).format()
    next_packet = Packet(packet.version, next_key, bytes(buf[end + HMAC_LEN:end + HMAC_LEN + size]), next_hmac)
    return Peeled(bytes(buf[start:end]), next_packet, secret)


def create_error(shared_secret: bytes, failure_message: bytes, pad_to: int = 256) -> bytes:
    """The erring hop's return packet, padded so its length does not reveal the failure."""
    pad = max(pad_to - len(failure_message), 0)
    if len(failure_message) > 0xFFFF or pad > 0xFFFF:
        raise ValueError("failure message or padding too long")
    body = (len(failure_message).to_bytes(2, "big") + failure_message
            + pad.to_bytes(2, "big") + bytes(pad))
    return wrap_error(shared_secret, _mac(generate_key(shared_secret, b"um"), body) + body)


def wrap_error(shared_secret: bytes, error_packet: bytes) -> bytes:
    """Add one hop's obfuscation layer (the erring hop applies it too)."""
    return bytes(_xor(generate_key(shared_secret, b"ammag"), error_packet))


def decode_error(shared_secrets: Sequence[bytes], error_packet: bytes) -> Tuple[int, bytes]:
    """Peel hop by hop until one hop's HMAC matches: that hop sent the failure."""
    buf = error_packet
    for index, secret in enumerate(shared_secrets):
        buf = wrap_error(secret, buf)
        mac, body = buf[:HMAC_LEN], buf[HMAC_LEN:]
        if len(mac) == HMAC_LEN and hmac.compare_digest(_mac(generate_key(secret, b"um"), body), mac):
            return index, _parse_error_body(body)
    raise OnionError("no hop's HMAC matches the error packet")


def _parse_error_body(body: bytes) -> bytes:
    if len(body) < 4:
        raise OnionError("error packet too short")
    failure_len = int.from_bytes(body[:2], "big")
    pad_at = 2 + failure_len
    if pad_at + 2 > len(body) or pad_at + 2 + int.from_bytes(body[pad_at:pad_at + 2], "big") != len(body):
        raise OnionError("error packet lengths do not add up", offset=HMAC_LEN)
    return body[2:pad_at]
