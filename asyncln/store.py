"""Records kept in lightningd's datastore, so held state survives a crash.

Keys are ``["asyncln", <kind>, <payment_hash>]`` and values are JSON. The
datastore is lightningd's own database, so a record is durable as soon as
the ``datastore`` call returns.
"""

import json
from typing import Dict, Optional


class Store:
    def __init__(self, rpc, namespace: str = "asyncln"):
        self.rpc = rpc
        self.namespace = namespace

    def put(self, kind: str, key: str, value: dict) -> None:
        self.rpc.call("datastore", {"key": [self.namespace, kind, key],
                                    "string": json.dumps(value, sort_keys=True),
                                    "mode": "create-or-replace"})

    def delete(self, kind: str, key: str) -> None:
        self.rpc.call("deldatastore", {"key": [self.namespace, kind, key]})

    def get(self, kind: str, key: str) -> Optional[dict]:
        found = self.rpc.call("listdatastore", {"key": [self.namespace, kind, key]})["datastore"]
        return next((json.loads(e["string"]) for e in found if "string" in e), None)

    def load(self, kind: str) -> Dict[str, dict]:
        found = self.rpc.call("listdatastore", {"key": [self.namespace, kind]})["datastore"]
        return {entry["key"][-1]: json.loads(entry["string"])
                for entry in found if len(entry["key"]) == 3 and "string" in entry}
