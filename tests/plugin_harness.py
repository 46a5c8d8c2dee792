"""Drive plugin.py over its stdio JSON-RPC, the way lightningd does.

``ScriptedRpc`` stands in for lightningd's RPC socket (the plugin calls it
for getinfo, datastore, getroutes, ...): it answers from a table and records
every call. This tier checks the plugin protocol and the glue; it is not an
integration test, which needs the real lightningd (tests/integration).
"""

import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, "plugin.py")
NODE_ID = "02" + "99" * 32


class RpcFailure(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class ScriptedRpc:
    """A unix-socket JSON-RPC server answering the calls plugin.py makes."""

    def __init__(self, directory, blockheight=1000):
        self.path = os.path.join(directory, "lightning-rpc")
        self.blockheight = blockheight
        self.datastore = {}
        self.calls = []
        self.handlers = {
            "getinfo": lambda p: {"id": NODE_ID, "blockheight": self.blockheight},
            "getchaininfo": lambda p: {"chain": "regtest", "headercount": self.blockheight,
                                       "blockcount": self.blockheight, "ibd": False},
            "waitblockheight": lambda p: {"blockheight": self.blockheight},
            "listdatastore": self._listdatastore,
            "datastore": self._datastore,
            "deldatastore": lambda p: self.datastore.pop(tuple(p["key"]), None) and {},
            "listpeers": lambda p: {"peers": []},
            "listpeerchannels": lambda p: {"channels": []},
            "sendcustommsg": lambda p: {"status": "ok"},
            "listsendpays": lambda p: {"payments": []},
            "listinvoices": lambda p: {"invoices": []},
            "getroutes": self._no_route,
            "makesecret": lambda p: {"secret": hashlib.sha256(p["string"].encode()).hexdigest()},
            "signmessage": lambda p: {"zbase": "d" * 104},
        }
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def called(self, method):
        return [params for name, params in self.calls if name == method]

    def _no_route(self, params):
        raise RpcFailure(205, "Unknown destination")

    def _listdatastore(self, params):
        prefix = tuple(params.get("key", []))
        return {"datastore": [{"key": list(k), "string": v} for k, v in sorted(self.datastore.items())
                              if k[:len(prefix)] == prefix]}

    def _datastore(self, params):
        self.datastore[tuple(params["key"])] = params["string"]
        return {"key": params["key"]}

    def _serve(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            self._converse(conn)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the plugin was killed mid-call, as a test meant it to be

    def _converse(self, conn):
        decoder, buf = json.JSONDecoder(), ""
        with conn:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk.decode()
                while buf.strip():
                    try:
                        request, end = decoder.raw_decode(buf.lstrip())
                    except ValueError:
                        break
                    buf = buf.lstrip()[end:]
                    conn.sendall((json.dumps(self._answer(request)) + "\n\n").encode())

    def _answer(self, request):
        method, params = request["method"], request.get("params") or {}
        if isinstance(params, list):
            params = {}
        self.calls.append((method, params))
        try:
            if method not in self.handlers:
                raise RpcFailure(-32601, f"Unknown command '{method}'")
            return {"jsonrpc": "2.0", "id": request["id"], "result": self.handlers[method](params)}
        except RpcFailure as e:
            return {"jsonrpc": "2.0", "id": request["id"],
                    "error": {"code": e.code, "message": str(e)}}


class PluginProcess:
    """plugin.py as a child process speaking lightningd's plugin protocol."""

    def __init__(self, plugin=PLUGIN, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="asyncln-stdio-")
        self.proc = subprocess.Popen([sys.executable, plugin], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, LIGHTNINGD_PLUGIN="1"))
        self.next_id = 0
        self.buffered = {}
        self.logs = []
        self.levels = []   # (level, message) of each log line
        self.decoder, self.buf = json.JSONDecoder(), ""
        self.lock = threading.Lock()

    def send(self, method, params, notification=False):
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        if not notification:
            self.next_id += 1
            msg["id"] = self.next_id
        self.proc.stdin.write((json.dumps(msg) + "\n\n").encode())
        self.proc.stdin.flush()
        return msg.get("id")

    def request(self, method, params, timeout=10):
        return self.response(self.send(method, params), timeout)

    def notify(self, method, params):
        self.send(method, params, notification=True)

    def response(self, request_id, timeout=10):
        deadline = time.monotonic() + timeout
        while request_id not in self.buffered:
            self._read_one(deadline)
        return self.buffered.pop(request_id)

    def answered(self, request_id, wait=0.5):
        """The answer if one arrives within ``wait`` seconds, else None."""
        try:
            return self.response(request_id, wait)
        except TimeoutError:
            return None

    def _read_one(self, deadline):
        while True:
            stripped = self.buf.lstrip()
            if stripped:
                try:
                    msg, end = self.decoder.raw_decode(stripped)
                except ValueError:
                    msg = None
                if msg is not None:
                    self.buf = stripped[end:]
                    if "id" in msg and msg.get("method") is None:
                        self.buffered[msg["id"]] = msg
                    elif msg.get("method") == "log":
                        self.logs.append(msg["params"]["message"])
                        self.levels.append((msg["params"].get("level"), msg["params"]["message"]))
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.proc.stdout], [], [], remaining)[0]:
                raise TimeoutError("the plugin sent nothing more in time")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError("plugin exited: " + self.proc.stderr.read().decode())
            self.buf += chunk.decode()

    def start(self, rpc, options=None):
        manifest = self.request("getmanifest", {"allow-deprecated-apis": False})["result"]
        opts = {o["name"]: o["default"] for o in manifest["options"]}
        opts.update(options or {})
        init = self.request("init", {"options": opts, "configuration": {
            "lightning-dir": self.dir, "rpc-file": os.path.basename(rpc.path),
            "startup": True, "network": "regtest", "feature_set": {}}})
        return manifest, init

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


def htlc_params(payment_hash, payload_hex, amount_msat, cltv_expiry, htlc_id=0,
                peer_id="02" + "aa" * 32, forward_msat=None, outgoing_cltv=None,
                shared_secret="33" * 32, channel="103x1x0"):
    """An htlc_accepted hook call for a final-hop HTLC, as lightningd sends it."""
    return {
        "peer_id": peer_id,
        "onion": {"payload": payload_hex, "type": "tlv",
                  "forward_msat": amount_msat if forward_msat is None else forward_msat,
                  "outgoing_cltv_value": cltv_expiry if outgoing_cltv is None else outgoing_cltv,
                  "shared_secret": shared_secret, "next_onion": "00" * 1366},
        "htlc": {"short_channel_id": channel, "id": htlc_id, "amount_msat": amount_msat,
                 "cltv_expiry": cltv_expiry, "cltv_expiry_relative": cltv_expiry - 1000,
                 "payment_hash": payment_hash},
    }


def wait_for(condition, timeout=10):
    """Poll ``condition`` until it holds; the plugin works in its own process."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition never held: {condition}")
        time.sleep(0.05)
