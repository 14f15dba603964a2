# shellcheck shell=bash
# registry.sh: the local Confluent-compatible schema registry of scripts/stack:
# Apicurio Registry on 127.0.0.1:8081. Its Confluent Schema Registry API (v7)
# is under http://127.0.0.1:8081/apis/ccompat/v7, so a Confluent client's
# `schema.registry.url` is that URL, not the bare host:port:
#   POST /apis/ccompat/v7/subjects/<subject>/versions  {"schema": "<avro json>"}
#        -> {"id": N}       (also "schemaType": "AVRO" | "JSON" | "PROTOBUF")
#   GET  /apis/ccompat/v7/schemas/ids/N -> {"schema": "..."}
# (Apicurio's own API is /apis/registry/v3; health on 127.0.0.1:9000.)
# No auth. Schemas are kept in an H2 file in the state dir, so ids survive a
# restart; `down --purge` forgets them.
# Sourced by scripts/stack after common.sh. Defines registry_up,
# registry_down, registry_status, registry_fetch.
#
# Cache: $PROJECTOR_CACHE/dist/apicurio-registry-<ver>/ (the Quarkus fast-jar
#        app: quarkus-run.jar, lib/, app/, quarkus/), unpacked from
#        io.apicurio:apicurio-registry-app:<ver>:tar.gz:all on Maven Central
# State: $PROJECTOR_STACK_DIR/registry/{config/application.properties,data/,
#        tmp/,registry.log,registry.pid}
#
# ---------------------------------------------------------------------------
# Which registry, and why (checked 2026-11 on the 2-core Debian 12 box)
#
# CHOSEN: Apicurio Registry 3.3.3 (Maven Central).
#   - io.apicurio:apicurio-registry-app:3.3.3 (the plain jar) is NOT runnable:
#     it is the app's classes before Quarkus' build step. The runnable app is
#     the attached assembly io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all
#     (158 MB; classifier `all`, id of app/src/main/assembly/assembly.xml),
#     which holds the Quarkus fast-jar layout: `java -jar quarkus-run.jar`.
#   - needs Java 21+ (built with release 21): runs on Temurin 25.
#   - empty cache to ready: 23 s (download ~8 s, unpack ~2 s, 168 MB on
#     disk, first start ~9 s); later starts 4-6 s to a passing probe (C1
#     only plus a class-data archive, see registry_start); ~200 MB RSS with
#     -Xmx256m; `down` < 1 s (~6 s once, while the JVM writes the archive).
#   - ccompat v7 checked: register Avro (same schema again -> same id) and
#     JSON schemas, GET /schemas/ids/<id>[/versions|/subjects],
#     /subjects, /subjects/<s>/versions[/latest|/<v>/schema], POST
#     /subjects/<s> (lookup), POST /compatibility/subjects/<s>/versions/latest,
#     GET/PUT /config[/<s>], DELETE /subjects/<s>[?permanent=true],
#     /schemas/types. Ids start at 1 and are content ids
#     (apicurio.ccompat.legacy-id-mode.enabled=false, the default): the same
#     schema under two subjects has one id. Errors: {"error_code": 40403,
#     "message": ...}, as Confluent's.
# REJECTED: Karapace: PyPI serves no karapace distribution at all
#   (`pip index versions karapace`: "No matching distribution found"), and
#   it would need Kafka as its store.
# ---------------------------------------------------------------------------

REGISTRY_VERSION="${REGISTRY_VERSION:-3.3.3}"
REGISTRY_PORT="${REGISTRY_PORT:-8081}"
REGISTRY_MANAGEMENT_PORT="${REGISTRY_MANAGEMENT_PORT:-9000}"
REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT"
REGISTRY_API="$REGISTRY_URL/apis/ccompat/v7"
REGISTRY_HEAP="${REGISTRY_HEAP:-256m}"
REGISTRY_PROBE_SUBJECT="projector-stack-probe-value"
REGISTRY_PROBE_SCHEMA='{"type":"record","name":"Probe","namespace":"projector.stack","fields":[{"name":"id","type":"long"}]}'
# Apicurio 3.x is built for Java 21; the Debian default (17) cannot run it.
REGISTRY_JAVA_HOME="${REGISTRY_JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"

registry_home() { printf '%s\n' "$PROJECTOR_CACHE/dist/apicurio-registry-$REGISTRY_VERSION"; }
registry_state() { state_dir registry; }
registry_pidfile() { printf '%s\n' "$PROJECTOR_STACK_DIR/registry/registry.pid"; }
registry_logfile() { printf '%s\n' "$PROJECTOR_STACK_DIR/registry/registry.log"; }

# A java of version 21 or newer: $REGISTRY_JAVA_HOME, else one under
# /usr/lib/jvm, else the one on PATH.
registry_java() {
  local j major
  for j in "$REGISTRY_JAVA_HOME/bin/java" /usr/lib/jvm/*/bin/java \
      "$(command -v java 2>/dev/null || true)"; do
    [[ -x "$j" ]] || continue
    major="$("$j" -XshowSettings:properties -version 2>&1 \
      | sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p')"
    if [[ "$major" =~ ^[0-9]+$ ]] && (( major >= 21 )); then
      printf '%s\n' "$j"
      return 0
    fi
  done
  return 1
}

# Downloads the app tarball through maven (into $STACK_M2) and unpacks it into
# $PROJECTOR_CACHE/dist once; a warm start never runs maven.
registry_fetch() {
  local home tgz tmp
  home="$(registry_home)"
  [[ -f "$home/.complete" ]] && return 0
  tgz="$(maven_artifact_path io.apicurio apicurio-registry-app "$REGISTRY_VERSION" tar.gz all)"
  if [[ ! -s "$tgz" ]]; then
    log "registry: fetching io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all from Maven Central (first run only)"
    mvn_fetch org.apache.maven.plugins:maven-dependency-plugin:3.8.1:get \
      -Dtransitive=false -Dartifact="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
      || { log "registry: maven could not fetch io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all"; return 1; }
  fi
  tmp="$(cache_dir dist)/.unpack-registry-$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  tar -xzf "$tgz" -C "$tmp" --no-same-owner || { rm -rf "$tmp"; log "registry: could not unpack $tgz"; return 1; }
  [[ -f "$tmp/quarkus-run.jar" ]] || { rm -rf "$tmp"; log "registry: $tgz has no quarkus-run.jar"; return 1; }
  rm -rf "$home"
  mv "$tmp" "$home"
  chmod -R a+rX "$home"
  touch "$home/.complete"
}

registry_render_config() {
  local dir="$1"
  mkdir -p "$dir/config" "$dir/data" "$dir/tmp"
  sed -e "s|@PORT@|$REGISTRY_PORT|g" -e "s|@MANAGEMENT_PORT@|$REGISTRY_MANAGEMENT_PORT|g" \
    -e "s|@DATA_DIR@|$dir/data|g" \
    "$STACK_CONF_DIR/registry/application.properties" >"$dir/config/application.properties"
}

registry_alive() { pid_alive "$(registry_pidfile)"; }

# A real round trip: register the probe schema (the same schema again gets
# the same id), then read it back by id and compare.
registry_probe() {
  local body id
  body="$(jq -cn --arg s "$REGISTRY_PROBE_SCHEMA" '{schema: $s}')"
  id="$(curl -fsS --max-time 10 -X POST -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
    --data "$body" "$REGISTRY_API/subjects/$REGISTRY_PROBE_SUBJECT/versions" | jq -er .id)" || return 1
  curl -fsS --max-time 10 "$REGISTRY_API/schemas/ids/$id" \
    | jq -e --argjson want "$REGISTRY_PROBE_SCHEMA" '(.schema | fromjson) == $want' >/dev/null
}

registry_fail() {
  log "registry: $*"
  tail_log "$(registry_logfile)"
  return 1
}

registry_start() {
  local dir java p
  dir="$(registry_state)"
  if registry_alive; then
    log "registry: already running (pid $(pid_of "$(registry_pidfile)"))"
    return 0
  fi
  for p in "$REGISTRY_PORT" "$REGISTRY_MANAGEMENT_PORT"; do
    if port_open "$p"; then
      log "registry: port $p is taken by a process this script did not start:"
      port_listener "$p" >&2
      return 1
    fi
  done
  java="$(registry_java)" || { log "registry: no java 21 or newer found (set REGISTRY_JAVA_HOME)"; return 1; }
  registry_render_config "$dir"
  [[ -f "$(registry_logfile)" ]] && mv -f "$(registry_logfile)" "$(registry_logfile).1"
  rm -f "$(registry_pidfile)"
  log "registry: starting Apicurio Registry $REGISTRY_VERSION on $REGISTRY_URL (Confluent API $REGISTRY_API)"
  # shellcheck disable=SC2016 # expanded by the inner shell
  # setsid: the registry outlives this script's process group. The inner
  # shell writes its own pid, then becomes java, so the pid file names the
  # JVM. The working dir is the state dir: Quarkus reads config/ from there.
  # Start-up on 2 busy cores: ~8 s as is, ~5 s with C1 only, ~3.6 s with C1
  # and a class-data archive, which the JVM writes into the cache when the
  # registry exits (so from the second start on) and rebuilds by itself if
  # the java or the jars change.
  REGISTRY_JAVA="$java" REGISTRY_PIDFILE="$(registry_pidfile)" REGISTRY_DIR="$dir" \
  REGISTRY_JAR="$(registry_home)/quarkus-run.jar" REGISTRY_XMX="$REGISTRY_HEAP" \
  REGISTRY_JSA="$(registry_home)/registry-cds.jsa" \
    setsid bash -c 'cd "$REGISTRY_DIR" || exit 1; echo $$ >"$REGISTRY_PIDFILE"; exec "$REGISTRY_JAVA" \
      -Xms64m -Xmx"$REGISTRY_XMX" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -XX:+AutoCreateSharedArchive -XX:SharedArchiveFile="$REGISTRY_JSA" \
      -Djava.awt.headless=true -Djava.io.tmpdir="$REGISTRY_DIR/tmp" -jar "$REGISTRY_JAR"' \
    >>"$(registry_logfile)" 2>&1 </dev/null &
  wait_until 10 "registry pid file" test -s "$(registry_pidfile)"
}

registry_up() {
  need_cmd curl
  need_cmd jq
  if ! registry_alive; then
    registry_fetch || return 1
  fi
  registry_start || registry_fail "could not start" || return 1
  wait_ready 120 "registry (register $REGISTRY_PROBE_SUBJECT, read it back by id)" \
    registry_alive registry_probe || registry_fail "did not become ready" || return 1
  log "registry: ready at $REGISTRY_API (pid $(pid_of "$(registry_pidfile)"))"
}

registry_down() {
  stop_pid "$(registry_pidfile)" registry 60
}

registry_status() {
  local state=down pid=-
  if registry_alive; then
    pid="$(pid_of "$(registry_pidfile)")"
    curl -fsS --max-time 5 -o /dev/null "$REGISTRY_API/subjects" 2>/dev/null && state=up
  fi
  status_line registry "$REGISTRY_VERSION" "$REGISTRY_URL" "$state" "$pid"
  [[ "$state" == up ]]
}
