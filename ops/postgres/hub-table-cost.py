#!/usr/bin/env python3
"""What each table and index the PostgreSQL hub writes per change costs PostgreSQL alone.

Writes SQL for psql: `--rows` changes as 1,000-row statements (one transaction each),
into one of these layouts, in a schema `x` it drops first:

  raw            the bench's raw ceiling: one row per change, PRIMARY KEY (origin, origin_seq)
  log+record     the change log (seq key, UNIQUE (origin, origin_seq)) and the record row
  +record-index  … plus the log's (tbl, record_id, seq) index (whole-record delivery, erasure)
  +routes        … plus one change_routes row per change (subtree feeds): what the hub writes
  log-only       +routes without the record row: the floor of a design that kept no
                 record rows (the merged state in the log), with its rows as narrow as today's

Columns as the tenant schema's (PostgresTenantSchema). Time it with psql, e.g.

  for layout in raw log+record +record-index +routes log-only; do
    ops/postgres/hub-table-cost.py $layout --rows 200000 > /tmp/$layout.sql
    /usr/bin/time -f "$layout %e s" psql -q -X "$URL" -f /tmp/$layout.sql > /dev/null
  done

BENCHMARKS.md ("2026-12-05, evening") has figures. Not a test of Tiersync's code: the floor
under the hub's ingest on PostgreSQL, whatever the hub does.
"""
import argparse

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("layout", choices=["raw", "log+record", "+record-index", "+routes", "log-only"])
parser.add_argument("--rows", type=int, default=200_000)
args = parser.parse_args()
log_only = args.layout == "log-only"
layers = 3 if log_only else ["raw", "log+record", "+record-index", "+routes"].index(args.layout)

print("\\set ON_ERROR_STOP on")
print("SET client_min_messages = warning;")
print("DROP SCHEMA IF EXISTS x CASCADE; CREATE SCHEMA x;")
if layers == 0:
    print("CREATE TABLE x.raw (origin TEXT NOT NULL, origin_seq BIGINT NOT NULL, hlc BIGINT NOT NULL, tbl TEXT NOT NULL, "
          "record_id TEXT NOT NULL, fields TEXT NOT NULL, PRIMARY KEY (origin, origin_seq));")
else:
    print("CREATE TABLE x.changes (seq BIGINT PRIMARY KEY, origin TEXT NOT NULL, origin_seq BIGINT NOT NULL, hlc BIGINT NOT NULL, "
          "tbl TEXT NOT NULL, record_id TEXT NOT NULL, op TEXT NOT NULL, fields TEXT NOT NULL, prior TEXT, source TEXT NOT NULL, "
          "received_from TEXT, received_at BIGINT NOT NULL, trail TEXT, UNIQUE (origin, origin_seq));")
    print("CREATE TABLE x.records (tbl TEXT NOT NULL, id TEXT NOT NULL, fields TEXT NOT NULL, versions TEXT NOT NULL, "
          "tombstone TEXT, route TEXT NOT NULL, live BOOLEAN NOT NULL, PRIMARY KEY (tbl, id));")
if layers >= 2:
    print("CREATE INDEX changes_record ON x.changes (tbl, record_id, seq);")
if layers >= 3:
    print("CREATE TABLE x.change_routes (node TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (node, seq));")

# Five dealers' new customers, fields as canonical JSON, as tiersync-bench's contacts.
origin = "'dealer-'||(g%5)"
record = "'dealer-'||(g%5)||'-c'||g"
fields = ("'{\"email\":\"schmidt.'||g||'@example.com\",\"last_name\":\"Schmidt\",\"owning_dealer\":\"dealer-'||(g%5)||'\","
          "\"phone\":\"+49 30 '||(1000000+g*7919%9000000)||'\"}'")
versions = "'{\"1700000000000\":[\"email\",\"last_name\",\"owning_dealer\",\"phone\"]}'"
for lo in range(1, args.rows + 1, 1000):
    rows = f"FROM generate_series({lo}, {min(lo + 999, args.rows)}) g"
    if layers == 0:
        print(f"INSERT INTO x.raw SELECT {origin}, g, 1700000000000+g, 'customers', {record}, {fields} {rows};")
        continue
    parts = [f"log AS (INSERT INTO x.changes (seq, origin, origin_seq, hlc, tbl, record_id, op, fields, source, received_from, received_at) "
             f"SELECT g, {origin}, g, 1700000000000+g, 'customers', {record}, 'upsert', {fields}, 'child', {origin}, 1700000000000 {rows})",
             f"rec AS (INSERT INTO x.records SELECT 'customers', {record}, {fields}, {versions}, NULL, {origin}, true {rows})"]
    if log_only:
        parts.pop()
    if layers >= 3:
        parts.append(f"r AS (INSERT INTO x.change_routes SELECT {origin}, g {rows})")
    print("WITH " + ", ".join(parts) + " SELECT 1;")
print("DROP SCHEMA x CASCADE;")
