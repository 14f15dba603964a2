# shellcheck shell=bash
# elasticsearch.sh: the local search engine of scripts/stack on 127.0.0.1:9200,
# either Elasticsearch (default) or OpenSearch (`up --opensearch`), never both.
# Both come as the "integ-test-zip" distribution from Maven Central (no JDK,
# almost no modules), unpacked once into $PROJECTOR_CACHE/dist, and run as the
# unprivileged system user projector-es (both refuse to run as root).
# Sourced by scripts/stack after common.sh. Defines search_up ENGINE,
# search_down [ENGINE], search_status, search_selected, search_engine_name.
#
# State: $PROJECTOR_STACK_DIR/<engine>/{config/,data/,logs/,tmp/,<engine>.pid,
#   launcher.pid,launcher.log}, all owned by projector-es, and
#   $PROJECTOR_STACK_DIR/search-engine naming the engine `up` chose last.
#
# Versions: the newest Elasticsearch 9.x integ-test-zip that Maven Central
# served (2026-11) is 9.5.4. Its maven-metadata.xml lists no 9.x at all (it
# stops at 8.19.21) and only some 9.x releases are there (9.0.0, 9.2.0, 9.2.4,
# 9.2.8, 9.5.0, 9.5.2, 9.5.3, 9.5.4 yes; 9.2.1, 9.3.0, 9.4.0, 9.5.1, 9.5.5,
# 9.5.6 no), so ELASTICSEARCH_VERSION must name one that exists.
# OpenSearch 2.19.6 is the newest 2.19.x; it runs on Java 17.

ELASTICSEARCH_VERSION="${ELASTICSEARCH_VERSION:-9.5.4}"
OPENSEARCH_VERSION="${OPENSEARCH_VERSION:-2.19.6}"
# Elasticsearch 9 needs Java 21 or newer.
ELASTICSEARCH_JAVA_HOME="${ELASTICSEARCH_JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
OPENSEARCH_JAVA_HOME="${OPENSEARCH_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
SEARCH_USER="${SEARCH_USER:-projector-es}"
SEARCH_HEAP="${SEARCH_HEAP:-1g}"
SEARCH_PORT=9200
SEARCH_URL="http://127.0.0.1:$SEARCH_PORT"
SEARCH_ENGINES=(elasticsearch opensearch)

search_version() {
  case "$1" in
    elasticsearch) printf '%s\n' "$ELASTICSEARCH_VERSION" ;;
    opensearch) printf '%s\n' "$OPENSEARCH_VERSION" ;;
  esac
}
search_group() {
  case "$1" in
    elasticsearch) printf '%s\n' org.elasticsearch.distribution.integ-test-zip ;;
    opensearch) printf '%s\n' org.opensearch.distribution.integ-test-zip ;;
  esac
}
search_java_home() {
  case "$1" in
    elasticsearch) printf '%s\n' "$ELASTICSEARCH_JAVA_HOME" ;;
    opensearch) printf '%s\n' "$OPENSEARCH_JAVA_HOME" ;;
  esac
}
# Prefix of the engine's environment variables (ES_JAVA_HOME, OPENSEARCH_PATH_CONF...).
search_env_prefix() {
  case "$1" in
    elasticsearch) printf '%s\n' ES ;;
    opensearch) printf '%s\n' OPENSEARCH ;;
  esac
}
search_home() { printf '%s/dist/%s-%s\n' "$PROJECTOR_CACHE" "$1" "$(search_version "$1")"; }
search_dir() { printf '%s/%s\n' "$PROJECTOR_STACK_DIR" "$1"; }
search_pidfile() { printf '%s/%s.pid\n' "$(search_dir "$1")" "$1"; }
search_launcher_pidfile() { printf '%s/launcher.pid\n' "$(search_dir "$1")"; }
search_launcher_log() { printf '%s/launcher.log\n' "$(search_dir "$1")"; }
# The node's own log file is named after cluster.name.
search_server_log() { printf '%s/logs/projector.log\n' "$(search_dir "$1")"; }
search_selection_file() { printf '%s/search-engine\n' "$PROJECTOR_STACK_DIR"; }

search_selected() {
  local f
  f="$(search_selection_file)"
  if [[ -s "$f" ]]; then
    head -n 1 "$f"
  else
    printf 'elasticsearch\n'
  fi
}

# search_engine_name NAME: maps a service name to an engine; `search` means
# the engine that `up` chose last.
search_engine_name() {
  case "$1" in
    elasticsearch | es) printf 'elasticsearch\n' ;;
    opensearch | os) printf 'opensearch\n' ;;
    search) search_selected ;;
    *) return 1 ;;
  esac
}

search_ensure_user() {
  id -u "$SEARCH_USER" >/dev/null 2>&1 && return 0
  log "search: creating system user $SEARCH_USER"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$SEARCH_USER" 2>/dev/null \
    || id -u "$SEARCH_USER" >/dev/null 2>&1
}

# Downloads the integ-test-zip through maven (into $STACK_M2) and unpacks it
# into $PROJECTOR_CACHE/dist once; a warm start never runs maven.
search_fetch() {
  local engine="$1" version group home zip
  version="$(search_version "$engine")"
  group="$(search_group "$engine")"
  home="$(search_home "$engine")"
  [[ -f "$home/.complete" ]] && return 0
  zip="$(maven_artifact_path "$group" "$engine" "$version" zip)"
  if [[ ! -s "$zip" ]]; then
    log "$engine: fetching $group:$engine:$version:zip from Maven Central (first run only)"
    mvn_fetch org.apache.maven.plugins:maven-dependency-plugin:3.8.1:get \
      -Dtransitive=false -Dartifact="$group:$engine:$version:zip" \
      || { log "$engine: maven could not fetch $group:$engine:$version:zip"; return 1; }
  fi
  need_cmd unzip
  local tmp
  tmp="$(cache_dir dist)/.unpack-$engine-$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  unzip -q "$zip" -d "$tmp" || { rm -rf "$tmp"; log "$engine: could not unzip $zip"; return 1; }
  rm -rf "$home"
  mv "$tmp/$engine-$version" "$home"
  rm -rf "$tmp"
  chmod -R a+rX "$home"
  touch "$home/.complete"
}

# Fresh config dir from the distribution's defaults plus our settings. Paths
# that the stock jvm.options gives relative to the working directory (the
# read-only install dir) are pointed at the node's logs dir.
search_render_config() {
  local engine="$1" home dir conf
  home="$(search_home "$engine")"
  dir="$(search_dir "$engine")"
  conf="$dir/config"
  mkdir -p "$conf/jvm.options.d" "$dir/data" "$dir/logs" "$dir/tmp"
  cp -R "$home/config/." "$conf/"
  sed -e "s|@DATA_DIR@|$dir/data|g" -e "s|@LOGS_DIR@|$dir/logs|g" \
    "$STACK_CONF_DIR/$engine/$engine.yml" >"$conf/$engine.yml"
  sed -i -e "s|file=logs/gc.log|file=$dir/logs/gc.log|" \
    -e "s|file=gc.log|file=$dir/logs/gc.log|" \
    -e "s|HeapDumpPath=data|HeapDumpPath=$dir/logs|" \
    -e "s|ErrorFile=logs/hs_err|ErrorFile=$dir/logs/hs_err|" \
    -e "s|ErrorFile=hs_err|ErrorFile=$dir/logs/hs_err|" \
    "$conf/jvm.options"
  {
    echo "# written by scripts/lib/elasticsearch.sh"
    echo "-Xms$SEARCH_HEAP"
    echo "-Xmx$SEARCH_HEAP"
    echo "-XX:HeapDumpPath=$dir/logs"
  } >"$conf/jvm.options.d/projector.options"
  chown -R "$SEARCH_USER:$SEARCH_USER" "$dir"
}

search_alive() {
  local engine="$1"
  pid_alive "$(search_pidfile "$engine")" || pid_alive "$(search_launcher_pidfile "$engine")"
}
search_not_alive_pidfile() { ! pid_alive "$1"; }
es_alive() { search_alive elasticsearch; }
os_alive() { search_alive opensearch; }

search_healthy() {
  curl -fsS --max-time 10 \
    "$SEARCH_URL/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null 2>&1
}

# Which engine answers on :9200, or nothing. Elasticsearch marks every
# response with the header "X-elastic-product: Elasticsearch"; OpenSearch does
# not. (GET / is no use: the ES 9 integ-test-zip lacks the module behind it and
# answers 405.)
search_answering_engine() {
  local headers
  headers="$(curl -sS --max-time 5 -D - -o /dev/null "$SEARCH_URL/_cluster/health" 2>/dev/null)" \
    || return 1
  grep -q '^HTTP/[0-9.]* 200' <<<"$headers" || return 1
  if grep -qi '^x-elastic-product: *Elasticsearch' <<<"$headers"; then
    printf 'elasticsearch\n'
  else
    printf 'opensearch\n'
  fi
}

search_running_version() {
  curl -fsS --max-time 5 "$SEARCH_URL/_nodes/_local?filter_path=nodes.*.version" 2>/dev/null \
    | sed -n 's/.*"version" *: *"\([^"]*\)".*/\1/p' | head -n 1
}

search_fail() {
  local engine="$1"
  shift
  log "$engine: $*"
  local -a logs=("$(search_launcher_log "$engine")")
  # The node's own log is appended to across runs: show it only if this run
  # (which wrote launcher.pid) has written to it.
  if [[ "$(search_server_log "$engine")" -nt "$(search_launcher_pidfile "$engine")" ]]; then
    logs+=("$(search_server_log "$engine")")
  fi
  tail_log "${logs[@]}"
  return 1
}

search_start() {
  local engine="$1" home dir java_home prefix
  home="$(search_home "$engine")"
  dir="$(search_dir "$engine")"
  java_home="$(search_java_home "$engine")"
  prefix="$(search_env_prefix "$engine")"
  if search_alive "$engine"; then
    log "$engine: already running (pid $(pid_of "$(search_pidfile "$engine")" || pid_of "$(search_launcher_pidfile "$engine")"))"
    return 0
  fi
  if port_open "$SEARCH_PORT"; then
    log "$engine: port $SEARCH_PORT is taken by a process this script did not start:"
    port_listener "$SEARCH_PORT" >&2
    return 1
  fi
  [[ -x "$java_home/bin/java" ]] || { log "$engine: no java at $java_home"; return 1; }
  search_ensure_user || { log "$engine: could not create user $SEARCH_USER"; return 1; }
  mkdir -p "$dir"
  if ! runuser -u "$SEARCH_USER" -- test -r "$home/lib"; then
    log "$engine: user $SEARCH_USER cannot read $home; put PROJECTOR_CACHE where every user can read it"
    return 1
  fi
  search_render_config "$engine"
  [[ -f "$(search_launcher_log "$engine")" ]] \
    && mv -f "$(search_launcher_log "$engine")" "$(search_launcher_log "$engine").1"
  rm -f "$(search_pidfile "$engine")"
  local -a args=(-p "$(search_pidfile "$engine")")
  # Elasticsearch's launcher daemonises (-d) once the node is up and exits;
  # OpenSearch's -d only backgrounds the shell, so it runs in the foreground
  # under runuser instead. Either way <engine>.pid names the server JVM, and
  # launcher.pid the runuser process that waits for the launcher.
  [[ "$engine" == elasticsearch ]] && args+=(-d)
  log "$engine: starting $engine $(search_version "$engine") on $SEARCH_URL (as $SEARCH_USER)"
  (
    cd "$dir" || exit 1
    # ES warns (bootstrap check, not enforced on loopback) below 65535 open
    # files; where the hard limit is lower (20000 here) this changes nothing.
    ulimit -n 65536 2>/dev/null || true
    setsid runuser -u "$SEARCH_USER" -- env \
      "${prefix}_JAVA_HOME=$java_home" \
      "${prefix}_PATH_CONF=$dir/config" \
      "${prefix}_TMPDIR=$dir/tmp" \
      "$home/bin/$engine" "${args[@]}" \
      >>"$(search_launcher_log "$engine")" 2>&1 </dev/null &
    echo $! >"$(search_launcher_pidfile "$engine")"
  )
}

# search_up ENGINE: stops the other engine if it runs, starts ENGINE unless it
# runs, and returns when the cluster health is yellow or better.
search_up() {
  local engine="$1" other
  need_cmd curl
  for other in "${SEARCH_ENGINES[@]}"; do
    [[ "$other" == "$engine" ]] && continue
    if search_alive "$other"; then
      log "$engine requested: stopping $other, which holds port $SEARCH_PORT"
      search_down "$other"
    fi
  done
  printf '%s\n' "$engine" >"$(search_selection_file)"
  if ! search_alive "$engine"; then
    search_fetch "$engine" || return 1
  fi
  search_start "$engine" || search_fail "$engine" "could not start" || return 1
  local alive_fn=es_alive
  [[ "$engine" == opensearch ]] && alive_fn=os_alive
  wait_ready 240 "$engine (cluster health yellow)" "$alive_fn" search_healthy \
    || search_fail "$engine" "did not become ready" || return 1
  local answering
  answering="$(search_answering_engine || true)"
  if [[ "$answering" != "$engine" ]]; then
    search_fail "$engine" "port $SEARCH_PORT answers as '$answering', not $engine"
    return 1
  fi
  search_single_node_template "$engine" || return 1
  log "$engine: ready at $SEARCH_URL (version $(search_running_version), pid $(pid_of "$(search_pidfile "$engine")" || echo '?'))"
}

# One node cannot hold replicas: without this every index would stay yellow
# and count its unassigned replica against cluster.max_shards_per_node (1000),
# which a few hundred test indexes reach. Applies to indexes created from now
# on; projector itself leaves shard settings to the cluster.
search_single_node_template() {
  local engine="$1" out
  out="$(curl -sS --max-time 10 -X PUT "$SEARCH_URL/_index_template/projector-local-single-node" \
    -H 'content-type: application/json' \
    -d '{"index_patterns":["*"],"priority":0,"template":{"settings":{"number_of_replicas":0}}}' 2>&1)" \
    || { log "$engine: could not install the single-node index template: $out"; return 1; }
  grep -q '"acknowledged":true' <<<"$out" \
    || { log "$engine: single-node index template refused: $out"; return 1; }
}

# search_down [ENGINE]: stops ENGINE, or both engines.
search_down() {
  local engine
  local -a engines=("${SEARCH_ENGINES[@]}")
  [[ $# -gt 0 ]] && engines=("$1")
  for engine in "${engines[@]}"; do
    stop_pid "$(search_pidfile "$engine")" "$engine" 90
    # runuser exits by itself once the server has; stop it only if it lingers.
    local launcher
    launcher="$(search_launcher_pidfile "$engine")"
    wait_until 5 "$engine launcher to exit" search_not_alive_pidfile "$launcher" >/dev/null 2>&1 || true
    stop_pid "$launcher" "$engine launcher" 30
  done
}

search_status() {
  local selected engine rc=0
  selected="$(search_selected)"
  for engine in "${SEARCH_ENGINES[@]}"; do
    local state=down pid=- version
    version="$(search_version "$engine")"
    if search_alive "$engine"; then
      pid="$(pid_of "$(search_pidfile "$engine")" || pid_of "$(search_launcher_pidfile "$engine")")"
      if [[ "$(search_answering_engine || true)" == "$engine" ]]; then
        state=up
        version="$(search_running_version)"
      fi
    elif [[ "$engine" != "$selected" ]]; then
      continue # not chosen, not running: nothing to report
    fi
    status_line "$engine" "$version" "$SEARCH_URL" "$state" "$pid"
    if [[ "$engine" == "$selected" && "$state" != up ]]; then
      rc=1
    fi
  done
  return "$rc"
}
