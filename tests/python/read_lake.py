"""Reads the contacts Delta table with the `deltalake` package (delta-rs's Python
binding, not this project's code) and prints, per source/account, the sorted ids, the
display names in id order and the number of e-mails, as JSON. It reads through pyarrow
datasets, or, with `scan` as the second argument, through delta-rs's own engine, which
applies deletion vectors."""
import json
import os
import sys

from deltalake import DeltaTable

dt = DeltaTable(sys.argv[1])
if sys.argv[2:] == ["scan"]:
    # delta-rs's own engine: the reader that honours deletion vectors.
    import pyarrow as pa

    table = pa.table(dt.scan())
else:
    table = dt.to_pyarrow_table()
rows = table.to_pylist()
out = {}
for r in sorted(rows, key=lambda r: (r["source"], r["account"], r["id"])):
    key = f'{r["source"]}/{r["account"]}'
    o = out.setdefault(key, {"ids": [], "display_names": [], "emails": 0})
    o["ids"].append(r["id"])
    o["display_names"].append(r["display_name"])
    o["emails"] += len(r["emails"] or [])
print(json.dumps(out))
sys.stdout.flush()
# pyarrow's and delta-rs's thread pools can abort the interpreter at shutdown
# ("terminate called without an active exception": apache/arrow#34314,
# delta-io/delta-rs#2184). The answer is already written, so skip the teardown.
os._exit(0)
