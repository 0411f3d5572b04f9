"""Reads a Delta table with DuckDB's `delta` extension (built on upstream delta-kernel-rs;
it shares no code with delta-rs or this project) and prints every row as JSON, one list,
in the shape of the project's `ContactRecord`: timestamps as microseconds since the
epoch, lists and structs as JSON. Deletion vectors are applied by the kernel.

Usage: read_lake_duckdb.py TABLE_PATH"""
import json
import os
import sys

import duckdb
import duckdb_extension_delta

EXT = os.path.join(
    os.path.dirname(duckdb_extension_delta.__file__),
    "extensions",
    "v" + duckdb.__version__,
    "delta.duckdb_extension",
)

con = duckdb.connect(
    config={
        # The extension ships in a PyPI wheel, not from DuckDB's signed repository, and
        # nothing may be fetched at run time.
        "allow_unsigned_extensions": "true",
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }
)
con.execute(f"LOAD '{EXT}'")
table = sys.argv[1].replace("'", "''")
cur = con.execute(
    f"""SELECT * REPLACE (
          epoch_us(updated) AS updated,
          epoch_us(_synced_at) AS _synced_at
        ) FROM delta_scan('{table}')"""
)
names = [d[0] for d in cur.description]
rows = [dict(zip(names, r)) for r in cur.fetchall()]
for r in rows:
    # Partition columns come back as they are; lists of nothing are lists.
    for k, v in r.items():
        if v is None and k in (
            "emails", "phones", "addresses", "ims", "organizations", "websites",
            "relations", "events", "groups", "extended_properties",
        ):
            r[k] = []
print(json.dumps(rows, ensure_ascii=False))
sys.stdout.flush()
os._exit(0)
