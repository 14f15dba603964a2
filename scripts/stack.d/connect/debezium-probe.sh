#!/usr/bin/env bash
# debezium-probe.sh: proves the local Kafka Connect + Debezium PostgreSQL
# source end to end and (re)writes the real-output fixtures in
# tests/fixtures/debezium-postgres/. Needs `scripts/stack up` (kafka,
# postgres, connect). Leaves nothing behind: it creates a scratch database
# dbz_probe (a table with a primary key, REPLICA IDENTITY FULL, one row per
# type family), registers a pgoutput source connector with a unique slot and
# publication, makes one snapshot read (r), one insert (c), one update (u) and
# one delete (d, followed by its tombstone) and one primary-key change (d and
# tombstone for the old key with a __debezium.newkey header, then c for the
# new key with __debezium.oldkey), reads them from the topic
# <prefix>.public.probe, then stops and deletes the connector and its offsets,
# drops the slot, the database (and so the publication) and the topic.
#
#   scripts/stack.d/connect/debezium-probe.sh [--keep]   (--keep: no cleanup)
#
# Fixture files: read, create, update, delete, tombstone and pk-change-{delete,
# tombstone,create}.json, each {"topic","partition","offset","headers","key",
# "value"}: key and value exactly as the JsonConverter (schemas.enable=true)
# wrote them, i.e. {"schema":…,"payload":…}; a tombstone's value is null;
# headers as {name: string value}.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
STACK="$ROOT/scripts/stack"
FIXTURES="${FIXTURES:-$ROOT/tests/fixtures/debezium-postgres}"
CONNECT_URL="${CONNECT_URL:-http://127.0.0.1:8083}"
PREFIX="${PROBE_TOPIC_PREFIX:-probe}"
DB=dbz_probe
TOPIC="$PREFIX.public.probe"
SUFFIX="$(date +%s)_$$"
NAME="dbz-probe-$SUFFIX"
SLOT="dbz_probe_$SUFFIX"
KEEP=0
[[ "${1:-}" == --keep ]] && KEEP=1

say() { printf '[probe] %s\n' "$*" >&2; }
psql_pg() { psql -h 127.0.0.1 -U postgres -d "$1" -XAtq -v ON_ERROR_STOP=1 "${@:2}"; }

cleanup() {
  [[ "$KEEP" == 1 ]] && { say "--keep: connector $NAME, slot $SLOT, database $DB and topic $TOPIC left in place"; return; }
  say "cleanup: connector $NAME, slot $SLOT, database $DB, topic $TOPIC"
  # Stop first: offsets can only be deleted from a stopped connector.
  curl -fsS -o /dev/null -X PUT "$CONNECT_URL/connectors/$NAME/stop" 2>/dev/null || true
  local _
  for _ in $(seq 1 30); do
    [[ "$(curl -fsS "$CONNECT_URL/connectors/$NAME/status" 2>/dev/null | jq -r .connector.state || true)" != RUNNING ]] && break
    sleep 1
  done
  curl -fsS -o /dev/null -X DELETE "$CONNECT_URL/connectors/$NAME/offsets" 2>/dev/null || true
  curl -fsS -o /dev/null -X DELETE "$CONNECT_URL/connectors/$NAME" 2>/dev/null || true
  # The slot is released when the task stops; wait until it is inactive.
  for _ in $(seq 1 30); do
    [[ "$(psql_pg postgres -c "select count(*) from pg_replication_slots where slot_name = '$SLOT' and active" || true)" == 0 ]] && break
    sleep 1
  done
  psql_pg postgres -c "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '$SLOT'" >/dev/null || true
  psql_pg postgres -c "drop database if exists $DB with (force)" >/dev/null || true
  "$STACK" kafka-topics --delete --if-exists --topic "$TOPIC" >/dev/null 2>&1 || true
}

curl -fsS "$CONNECT_URL/connector-plugins" | grep -q io.debezium.connector.postgresql.PostgresConnector \
  || { say "Kafka Connect with the Debezium PostgreSQL plugin is not up at $CONNECT_URL (scripts/stack up)"; exit 1; }
[[ "$(psql_pg postgres -c 'show wal_level')" == logical ]] || { say "PostgreSQL wal_level is not logical"; exit 1; }

trap cleanup EXIT
# A topic left by an earlier --keep run would mix old events in.
"$STACK" kafka-topics --delete --if-exists --topic "$TOPIC" >/dev/null 2>&1 || true
psql_pg postgres -c "drop database if exists $DB with (force)" -c "create database $DB"
psql_pg "$DB" <<'SQL'
create table public.probe (
  id          bigint primary key,
  name        text not null,
  price       numeric(10,2),
  amount      numeric,
  ratio       double precision,
  score       real,
  qty         integer,
  small       smallint,
  active      boolean,
  created_at  timestamp,
  created_ms  timestamp(3),
  updated_at  timestamptz,
  day         date,
  at_time     time,
  span        interval,
  uid         uuid,
  data        bytea,
  doc         jsonb,
  raw_doc     json,
  tags        text[],
  nums        integer[],
  code        char(3),
  note        varchar(40)
);
alter table public.probe replica identity full;
insert into public.probe values (
  1, 'snapshot row', 12.34, 3.14159, 1.5, 2.25, 7, -3, true,
  '2026-11-27 10:11:12.123456', '2026-11-27 10:11:12.123', '2026-11-27 10:11:12.123456+02',
  '2026-11-27', '10:11:12.5', '1 day 02:03:04', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '\xdeadbeef', '{"b": 2, "a": [1, "x"]}', '{"b": 2, "a": 1}', '{red,"with space"}', '{1,2,3}',
  'ab', 'snapshot');
SQL

say "registering connector $NAME (slot $SLOT, topic $TOPIC)"
config="$(jq -n --arg name "$NAME" --arg slot "$SLOT" --arg prefix "$PREFIX" --arg db "$DB" '{
  name: $name,
  config: {
    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
    "tasks.max": "1",
    "database.hostname": "127.0.0.1",
    "database.port": "5432",
    "database.user": "postgres",
    "database.dbname": $db,
    "topic.prefix": $prefix,
    "plugin.name": "pgoutput",
    "slot.name": $slot,
    "publication.name": $slot,
    "publication.autocreate.mode": "filtered",
    "table.include.list": "public.probe",
    "snapshot.mode": "initial",
    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
    "key.converter.schemas.enable": "true",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter.schemas.enable": "true"
  }}')"
curl -fsS -X POST -H 'Content-Type: application/json' --data "$config" "$CONNECT_URL/connectors" >/dev/null

state=""
for _ in $(seq 1 60); do
  state="$(curl -fsS "$CONNECT_URL/connectors/$NAME/status" 2>/dev/null | jq -r '.tasks[0].state // empty' || true)"
  [[ "$state" == RUNNING || "$state" == FAILED ]] && break
  sleep 1
done
if [[ "$state" != RUNNING ]]; then
  say "task state: ${state:-none}"
  curl -fsS "$CONNECT_URL/connectors/$NAME/status" | jq . >&2 || true
  exit 1
fi
# The snapshot is done and streaming has begun once the slot is active.
for _ in $(seq 1 60); do
  [[ "$(psql_pg postgres -c "select count(*) from pg_replication_slots where slot_name = '$SLOT' and active" || true)" == 1 ]] && break
  sleep 1
done
sleep 2

say "insert, update, delete, primary-key change"
psql_pg "$DB" <<'SQL'
insert into public.probe values (
  2, 'inserted row', -0.50, 12345678901234567890.123456789, -2.5e-10, 'NaN', 2147483647, 32767, false,
  '1969-12-31 23:59:59.999999', '2000-01-01 00:00:00', '2026-06-01 00:00:00+00',
  '1900-01-01', '23:59:59.999999', '-1 mons 2 days', '00000000-0000-0000-0000-000000000001',
  '', '{"nested": {"k": null}, "n": 1.50}', '[1, 2]', '{}', '{NULL,5}', 'xyz', null);
update public.probe set name = 'updated row', price = 99.99, active = null, tags = '{blue}' where id = 1;
delete from public.probe where id = 2;
update public.probe set id = 11, note = 'moved' where id = 1;
SQL

# r, c, u, d + tombstone, and the key change: d + tombstone (old key) and c.
expected=8
out="$(mktemp)"
say "reading $TOPIC"
"$STACK" kafka-console-consumer --topic "$TOPIC" --from-beginning --max-messages "$expected" \
  --timeout-ms 60000 \
  --formatter-property print.partition=true --formatter-property print.offset=true \
  --formatter-property print.headers=true --formatter-property print.key=true \
  --formatter-property key.separator=$'\t' --formatter-property line.separator=$'\n' \
  --formatter-property headers.separator=$'\x1f' \
  >"$out" 2>/dev/null || true
n="$(wc -l <"$out")"
if [[ "$n" -lt "$expected" ]]; then
  say "expected $expected records on $TOPIC, got $n:"
  cat "$out" >&2
  exit 1
fi

# Console lines: "Partition:P<TAB>Offset:O<TAB>HEADERS<TAB>KEY<TAB>VALUE", the
# headers as name:value pairs joined by <US> (or NO_HEADERS); header names
# have no colon, values may. Python (not jq 1.6, which turns every number
# into a double and so rounds ts_ns) writes the files: ints stay exact.
mkdir -p "$FIXTURES"
python3 - "$TOPIC" "$FIXTURES" "$out" <<'PY'
import json, sys

topic, fixtures, records = sys.argv[1], sys.argv[2], sys.argv[3]
ops = {"r": "read", "c": "create", "u": "update", "d": "delete"}
for line in open(records, encoding="utf-8").read().splitlines():
    part, off, hdrs, key, value = line.split("\t", 4)
    headers = {}
    if hdrs != "NO_HEADERS":
        for pair in hdrs.split("\x1f"):
            name, _, val = pair.partition(":")
            headers[name] = None if val == "null" else val
    value = json.loads(value)
    name = "tombstone" if value is None else ops[value["payload"]["op"]]
    if "__debezium.newkey" in headers or "__debezium.oldkey" in headers:
        name = "pk-change-" + name
    record = {
        "topic": topic,
        "partition": int(part.removeprefix("Partition:")),
        "offset": int(off.removeprefix("Offset:")),
        "headers": headers,
        "key": json.loads(key),
        "value": value,
    }
    path = f"{fixtures}/{name}.json"
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(f"[probe] wrote {path} (partition {record['partition']}, offset {record['offset']})", file=sys.stderr)
PY
rm -f "$out"
