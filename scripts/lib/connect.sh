# shellcheck shell=bash
# connect.sh: the local Kafka Connect worker of scripts/stack, with the
# Debezium PostgreSQL source and JDBC sink connectors. One DISTRIBUTED worker
# (org.apache.kafka.connect.cli.ConnectDistributed, group projector-connect)
# with its REST API on http://127.0.0.1:8083, storing its state in the local
# Kafka (topics projector-connect-{configs,offsets,status}). Run from jars
# that maven copies out of Maven Central into $PROJECTOR_CACHE.
# Sourced by scripts/stack after common.sh and kafka.sh. Defines connect_up,
# connect_down, connect_status, connect_fetch.
#
# Cache: $PROJECTOR_CACHE/connect-<ver>/libs/         worker classpath
#        $PROJECTOR_CACHE/connect-plugins/<artifact>-<ver>/<artifact>/
#                                                      unpacked plugin folders
# State: $PROJECTOR_STACK_DIR/connect/{connect-distributed.properties,
#        connect.log,connect.pid}
#
# Start-up: `plugin.discovery=service_load` (both Debezium plugins ship
# ServiceLoader manifests): ready 4-8 s after launch, against ~14 s with
# Kafka's default hybrid_warn, which scans every jar. ~200 MB RSS idle.
#
# REST (http://127.0.0.1:8083):
#   create   POST   /connectors  {"name": N, "config": {...}}   -> 201
#            (or PUT /connectors/N/config {...}: create or update, idempotent)
#   status   GET    /connectors/N/status -> {"connector": {"state": ...},
#            "tasks": [{"id": 0, "state": "RUNNING" | "FAILED", "trace": ...}]}
#            (a task appears a moment after the POST; FAILED carries "trace")
#   list     GET    /connectors?expand=status
#   delete   DELETE /connectors/N    -> 204. Source offsets stay in
#            projector-connect-offsets: a connector created again under the
#            same name resumes from them. To forget them, before deleting:
#            PUT /connectors/N/stop (-> 204; state STOPPED), then
#            DELETE /connectors/N/offsets (for a sink this deletes its
#            consumer group connect-N). GET /connectors/N/offsets shows them.
#   plugins  GET    /connector-plugins[?connectorsOnly=false]
#
# Debezium PostgreSQL source, the config that works here (checked with
# scripts/stack.d/connect/debezium-probe.sh, which writes the real events in
# tests/fixtures/debezium-postgres/ and then removes everything it made):
#   "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
#   "tasks.max": "1",
#   "database.hostname": "127.0.0.1", "database.port": "5432",
#   "database.user": "postgres", "database.dbname": "<db>",
#        (trust auth: no database.password needed)
#   "topic.prefix": "<prefix>",          topics are <prefix>.<schema>.<table>
#   "plugin.name": "pgoutput",           the default, decoderbufs, is not in PG
#   "slot.name": "<unique per connector>",   [a-z0-9_]; two connectors on one
#        slot fail. The slot outlives the connector: drop it after deleting
#        the connector, once inactive:
#        select pg_drop_replication_slot('<slot>') from pg_replication_slots
#          where slot_name = '<slot>' and not active;
#   "publication.name": "<unique>",      the default name, dbz_publication,
#        would be shared by every connector of one database: give each its own
#        (it is dropped with the database, or: drop publication <name>)
#   "publication.autocreate.mode": "filtered",   publication of the included
#        tables only ("all_tables", the default, needs FOR ALL TABLES)
#   "table.include.list": "public.<table>",     regexes, schema-qualified
#   "snapshot.mode": "initial"           (default: snapshot r events, then
#        streaming; "no_data" skips the snapshot)
#   "key.converter"/"value.converter": "org.apache.kafka.connect.json.JsonConverter",
#   "key.converter.schemas.enable"/"value.converter.schemas.enable": "true"
#        (the worker's defaults already; per-connector keys override them)
# Tables need a primary key (else the key is null) and `REPLICA IDENTITY
# FULL` for a complete `before` on u and d (checked: with it, before is the
# whole old row on both; without it, per Debezium's docs, before is null on
# u and holds only the key columns on d). The database needs
# wal_level=logical (the stack's PostgreSQL has it).
#
# What it emits (Debezium 3.6.1, defaults; fixtures read/create/update/
# delete/tombstone/pk-change-*.json): key {"schema", "payload": {pk cols}};
# value {"schema", "payload": {before, after, source, transaction (null
# unless provide.transaction.metadata=true), op, ts_ms, ts_us, ts_ns}}.
#   source: version, connector "postgresql", name (=topic.prefix), ts_ms/us/ns
#     (when the change was made; for r, when the row was read; ts_ns =
#     ts_us*1000), snapshot ("first", "true", "last"
#     or "last" alone for one row; "false" when streaming), db, schema,
#     table, txId (int), lsn (int, the change's own WAL position; every r
#     of one snapshot has the snapshot's lsn), xmin null, origin null,
#     origin_lsn null, sequence: a STRING holding a JSON array of two
#     strings, "[\"<lastCommitLsn>\",\"<lsn>\"]", first element null for
#     snapshot reads and for the first transaction streamed after start.
#     lsn is NOT commit order across transactions: a transaction that
#     began earlier and commits later has lower lsns than one that commits
#     in between (seen with two interleaved transactions); lastCommitLsn is
#     the end LSN of the previously committed transaction. For one row,
#     row locks make lsn order match commit order.
#   d is followed by a tombstone (same key, value null). A primary-key
#     update is d + tombstone for the old key, with header
#     __debezium.newkey = new key payload as JSON text, then c for the new
#     key with __debezium.oldkey. Every record also carries the headers
#     __debezium.context.{connectorLogicalName,taskId,connectorName,runId}.
#   Columns (JsonConverter, decimal.handling.mode=precise,
#   time.precision.mode=adaptive, the defaults):
#     numeric(p,s)  bytes, base64 of the unscaled two's-complement big-endian
#                   integer; schema name org.apache.kafka.connect.data.Decimal,
#                   parameters {"scale": "s", "connect.decimal.precision": "p"}
#                   (12.34 -> "BNI=")
#     numeric       {"scale": int, "value": base64} (io.debezium.data.
#                   VariableScaleDecimal)
#     double/real   JSON number; NaN as the string "NaN"
#     int2/4/8      JSON number (int16/int32/int64); boolean: true/false
#     timestamp     int64 µs since the epoch (io.debezium.time.MicroTimestamp);
#                   timestamp(0..3): int64 ms (io.debezium.time.Timestamp)
#     timestamptz   string, UTC, 6 fraction digits (also .000000),
#                   "2026-11-27T08:11:12.123456Z" (io.debezium.time.ZonedTimestamp)
#     date          int32 days since 1970-01-01 (io.debezium.time.Date)
#     time          int64 µs since midnight (io.debezium.time.MicroTime)
#     interval      int64 µs, a month = 30.4375 days (io.debezium.time.MicroDuration)
#     uuid          string (io.debezium.data.Uuid)
#     bytea         base64 string
#     json/jsonb    the document as a string (io.debezium.data.Json); jsonb
#                   text is PostgreSQL's normalised form
#     text[]/int[]  JSON array (items optional: NULL elements are null)
#     char(n)       string, blank-padded
#
# Debezium JDBC sink (3.6.0.Final) into PostgreSQL, checked once with the
# probe's topic (config: "connector.class":
# "io.debezium.connector.jdbc.JdbcSinkConnector", "topics", "connection.url":
# "jdbc:postgresql://127.0.0.1:5432/<db>", "connection.username": "postgres",
# "connection.password": "", "insert.mode": "upsert", "primary.key.mode":
# "record_key", "delete.enabled": "true", "schema.evolution": "basic",
# "collection.name.format": "${source.table}",
# "consumer.override.auto.offset.reset": "earliest"): it created the table
# and applied r/c/u/d and the key change. Note: a variable-scale numeric
# column became double precision, jsonb became json.

CONNECT_VERSION="${CONNECT_VERSION:-${KAFKA_VERSION:-4.4.0}}"
# Maven Central serves debezium-connector-postgres 3.6.1.Final, but no
# debezium-connector-jdbc 3.6.1.Final (its newest there is 3.6.0.Final). Each
# plugin has its own class loader, so the two versions do not clash.
DEBEZIUM_VERSION="${DEBEZIUM_VERSION:-3.6.1.Final}"
DEBEZIUM_JDBC_VERSION="${DEBEZIUM_JDBC_VERSION:-3.6.0.Final}"
CONNECT_PORT="${CONNECT_PORT:-8083}"
CONNECT_URL="http://127.0.0.1:$CONNECT_PORT"
CONNECT_BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
# The classes that `up` waits to see in GET /connector-plugins.
CONNECT_REQUIRED_PLUGINS=(
  io.debezium.connector.postgresql.PostgresConnector
  io.debezium.connector.jdbc.JdbcSinkConnector
)
# Kafka 4.x (and Connect) runs on Java 17+; the Debian default is 17.
CONNECT_JAVA_HOME="${CONNECT_JAVA_HOME:-${KAFKA_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}}"

connect_home() { printf '%s\n' "$PROJECTOR_CACHE/connect-$CONNECT_VERSION"; }
connect_plugins_root() { printf '%s\n' "$PROJECTOR_CACHE/connect-plugins"; }
connect_state() { state_dir connect; }
connect_pidfile() { printf '%s\n' "$PROJECTOR_STACK_DIR/connect/connect.pid"; }
connect_logfile() { printf '%s\n' "$PROJECTOR_STACK_DIR/connect/connect.log"; }

# The plugins as "artifact:version", one per line.
connect_plugin_list() {
  printf '%s\n' "debezium-connector-postgres:$DEBEZIUM_VERSION" \
    "debezium-connector-jdbc:$DEBEZIUM_JDBC_VERSION"
}

# plugin.path: one entry per plugin, the folder that holds its plugin folder.
connect_plugin_path() {
  local item path=""
  while IFS= read -r item; do
    path+="${path:+,}$(connect_plugins_root)/${item%%:*}-${item#*:}"
  done < <(connect_plugin_list)
  printf '%s\n' "$path"
}

connect_java() {
  if [[ -x "$CONNECT_JAVA_HOME/bin/java" ]]; then
    printf '%s\n' "$CONNECT_JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    command -v java
  else
    return 1
  fi
}

# One plugin's tar.gz (io.debezium:<artifact>:<ver>:tar.gz:plugin), through
# maven into $STACK_M2, unpacked into the cache once.
connect_fetch_plugin() {
  local artifact="$1" version="$2" dest tgz tmp
  dest="$(connect_plugins_root)/$artifact-$version"
  [[ -f "$dest/.complete" ]] && return 0
  tgz="$(maven_artifact_path io.debezium "$artifact" "$version" tar.gz plugin)"
  if [[ ! -s "$tgz" ]]; then
    log "connect: fetching io.debezium:$artifact:$version:tar.gz:plugin from Maven Central (first run only)"
    mvn_fetch org.apache.maven.plugins:maven-dependency-plugin:3.8.1:get \
      -Dtransitive=false -Dartifact="io.debezium:$artifact:$version:tar.gz:plugin" \
      || { log "connect: maven could not fetch io.debezium:$artifact:$version:tar.gz:plugin"; return 1; }
  fi
  tmp="$(connect_plugins_root)/.unpack-$artifact-$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  tar -xzf "$tgz" -C "$tmp" || { rm -rf "$tmp"; log "connect: could not unpack $tgz"; return 1; }
  [[ -d "$tmp/$artifact" ]] || { rm -rf "$tmp"; log "connect: $tgz has no $artifact/ folder"; return 1; }
  rm -rf "$dest"
  mv "$tmp" "$dest"
  touch "$dest/.complete"
}

# Builds the worker classpath and the plugin folders. Skipped when complete,
# so a warm start never runs maven.
connect_fetch() {
  local home
  home="$(connect_home)"
  if [[ ! -f "$home/.complete" ]]; then
    log "connect: fetching Kafka Connect $CONNECT_VERSION jars from Maven Central (first run only)"
    local tmp="$home/libs.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$home"
    if ! mvn_fetch -f "$STACK_CONF_DIR/connect/pom.xml" -Dkafka.version="$CONNECT_VERSION" \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp"; then
      rm -rf "$tmp"
      log "connect: maven could not fetch the Kafka Connect $CONNECT_VERSION classpath"
      return 1
    fi
    rm -rf "$home/libs"
    mv "$tmp" "$home/libs"
    touch "$home/.complete"
  fi
  mkdir -p "$(connect_plugins_root)"
  local item
  while IFS= read -r item; do
    connect_fetch_plugin "${item%%:*}" "${item#*:}" || return 1
  done < <(connect_plugin_list)
}

connect_render_config() {
  local dir="$1"
  sed -e "s|@BOOTSTRAP@|$CONNECT_BOOTSTRAP|g" -e "s|@PORT@|$CONNECT_PORT|g" \
    -e "s|@PLUGIN_PATH@|$(connect_plugin_path)|g" \
    -e "s|@PLUGIN_DISCOVERY@|${CONNECT_PLUGIN_DISCOVERY:-service_load}|g" \
    "$STACK_CONF_DIR/connect/connect-distributed.properties" \
    >"$dir/connect-distributed.properties"
}

connect_alive() { pid_alive "$(connect_pidfile)"; }

# Ready: the REST API answers and lists every required connector class.
connect_ready() {
  local plugins cls
  plugins="$(curl -fsS --max-time 5 "$CONNECT_URL/connector-plugins" 2>/dev/null)" || return 1
  for cls in "${CONNECT_REQUIRED_PLUGINS[@]}"; do
    [[ "$plugins" == *"\"$cls\""* ]] || return 1
  done
}

connect_fail() {
  log "connect: $*"
  tail_log "$(connect_logfile)"
  return 1
}

connect_start() {
  local dir java
  dir="$(connect_state)"
  if connect_alive; then
    log "connect: already running (pid $(pid_of "$(connect_pidfile)"))"
    return 0
  fi
  if port_open "$CONNECT_PORT"; then
    log "connect: port $CONNECT_PORT is taken by a process this script did not start:"
    port_listener "$CONNECT_PORT" >&2
    return 1
  fi
  if ! port_open "${CONNECT_BOOTSTRAP##*:}" "${CONNECT_BOOTSTRAP%:*}"; then
    log "connect: Kafka does not answer at $CONNECT_BOOTSTRAP (start it first: scripts/stack start-service kafka)"
    return 1
  fi
  java="$(connect_java)" || { log "connect: no java found"; return 1; }
  connect_render_config "$dir"
  [[ -f "$(connect_logfile)" ]] && mv -f "$(connect_logfile)" "$(connect_logfile).1"
  rm -f "$(connect_pidfile)"
  log "connect: starting Kafka Connect $CONNECT_VERSION (distributed) on $CONNECT_URL"
  # shellcheck disable=SC2016 # expanded by the inner shell
  # setsid: the worker outlives this script's process group. The inner shell
  # writes its own pid, then becomes java, so the pid file names the JVM.
  CONNECT_JAVA="$java" CONNECT_PIDFILE="$(connect_pidfile)" CONNECT_DIR="$dir" \
  CONNECT_CP="$(connect_home)/libs/*" CONNECT_LOG4J="$STACK_CONF_DIR/connect/log4j2.properties" \
    setsid bash -c 'ulimit -n 65536 2>/dev/null; echo $$ >"$CONNECT_PIDFILE"; exec "$CONNECT_JAVA" \
      -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$CONNECT_LOG4J" \
      -cp "$CONNECT_CP" org.apache.kafka.connect.cli.ConnectDistributed \
      "$CONNECT_DIR/connect-distributed.properties"' \
    >>"$(connect_logfile)" 2>&1 </dev/null &
  wait_until 10 "connect pid file" test -s "$(connect_pidfile)"
}

connect_up() {
  need_cmd curl
  if ! connect_alive; then
    connect_fetch || return 1
  fi
  connect_start || connect_fail "could not start" || return 1
  wait_ready 180 "connect (GET /connector-plugins lists ${CONNECT_REQUIRED_PLUGINS[*]})" \
    connect_alive connect_ready || connect_fail "did not become ready" || return 1
  log "connect: ready at $CONNECT_URL (pid $(pid_of "$(connect_pidfile)"))"
}

connect_down() {
  stop_pid "$(connect_pidfile)" connect 60
}

connect_status() {
  local state=down pid=-
  if connect_alive; then
    pid="$(pid_of "$(connect_pidfile)")"
    curl -fsS --max-time 5 -o /dev/null "$CONNECT_URL/" 2>/dev/null && state=up
  fi
  status_line connect "$CONNECT_VERSION" "$CONNECT_URL" "$state" "$pid"
  [[ "$state" == up ]]
}
