#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests, with Debian's PostgreSQL binaries.
#
#   ops/postgres/test-cluster.sh start DIR [PORT]   # prints postgres://USER@127.0.0.1:PORT/tiersync_test (last line)
#   ops/postgres/test-cluster.sh stop DIR
#
# start: creates the cluster in DIR/data unless it is there already, and starts it unless it
# runs already (then it only prints the URL again). It listens on 127.0.0.1 only, on PORT or
# a free port; its unix socket and log (DIR/postgres.log) are in DIR. Trust authentication
# (no password) for local and loopback connections; fsync and synchronous commit off: it is
# for tests, and a crash loses it. It creates the database `tiersync_test`.
# stop: stops the cluster in DIR (fast shutdown); nothing running is not an error. Remove DIR
# yourself afterwards.
#
# PostgreSQL refuses to run as root. Run as root, the cluster belongs to a system user,
# TIERSYNC_PG_USER (default tiersync-ci, created if missing), and initdb/pg_ctl run through
# `runuser -u`; DIR must then be reachable by that user (under /tmp, not under /root).
# Run as another user, the cluster is that user's. The database user is the same name.
# The binaries come from PG_BINDIR if set, else the newest /usr/lib/postgresql/*/bin,
# else initdb and pg_ctl on PATH.
set -euo pipefail

die() { echo "test-cluster: $*" >&2; exit 1; }
note() { echo "test-cluster: $*" >&2; }

usage() {
  echo "usage: $0 start DIR [PORT] | stop DIR" >&2
  exit 2
}

find_bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then
    [ -x "$PG_BINDIR/initdb" ] && [ -x "$PG_BINDIR/pg_ctl" ] || die "PG_BINDIR=$PG_BINDIR has no initdb and pg_ctl"
    echo "$PG_BINDIR"; return
  fi
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5n -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then echo "$d"; return; fi
  done
  local initdb
  initdb=$(command -v initdb 2>/dev/null) || die "no PostgreSQL server binaries: install Debian's postgresql package (apt-get install postgresql) or set PG_BINDIR"
  d=$(dirname "$(readlink -f "$initdb")")
  [ -x "$d/pg_ctl" ] || die "found $initdb but no pg_ctl beside it; set PG_BINDIR"
  echo "$d"
}

# The user the cluster runs as; as root, a system user created on first use.
cluster_user() {
  if [ "$(id -u)" -ne 0 ]; then id -un; return; fi
  local user=${TIERSYNC_PG_USER:-tiersync-ci}
  if ! id -u "$user" >/dev/null 2>&1; then
    command -v useradd >/dev/null 2>&1 || die "running as root and user $user does not exist (and no useradd to create it)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user" \
      || die "could not create system user $user"
    note "created system user $user"
  fi
  [ "$(id -u "$user")" -ne 0 ] || die "TIERSYNC_PG_USER=$user is root; PostgreSQL does not run as root"
  echo "$user"
}

# Runs a command as the cluster's user (directly when that is who we are), from DIR so that
# PostgreSQL never starts in a directory it cannot read.
as_user() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd "$dir" && runuser -u "$user" -- "$@")
  else
    (cd "$dir" && "$@")
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

random_free_port() {
  local p tries=0
  while [ $tries -lt 50 ]; do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    port_in_use "$p" || { echo "$p"; return; }
    tries=$((tries + 1))
  done
  die "found no free loopback port"
}

running() { [ -f "$dir/data/postmaster.pid" ] && as_user "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; }

# The port a running cluster listens on (postmaster.pid's fourth line).
running_port() { sed -n 4p "$dir/data/postmaster.pid"; }

write_settings() {
  cat >"$dir/data/tiersync-test.conf" <<EOF
# Written by ops/postgres/test-cluster.sh at each start: a throwaway cluster for tests.
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
  chown "$user": "$dir/data/tiersync-test.conf" 2>/dev/null || true
}

psql_tcp() {
  local psql=$bindir/psql
  [ -x "$psql" ] || psql=$(command -v psql) || die "no psql (Debian: postgresql-client)"
  "$psql" -X -q -h 127.0.0.1 -p "$port" -U "$user" -d postgres -v ON_ERROR_STOP=1 -tA "$@"
}

start() {
  local requested=${1:-}
  if [ -n "$requested" ]; then
    [[ "$requested" =~ ^[0-9]+$ ]] && [ "$requested" -ge 1 ] && [ "$requested" -le 65535 ] || die "PORT must be a number from 1 to 65535, not '$requested'"
  fi
  [[ "$dir" != *"'"* ]] || die "DIR may not contain a single quote: $dir"
  # The socket's path (DIR/.s.PGSQL.PORT) must fit a unix socket address (107 bytes).
  [ $(( ${#dir} + 18 )) -le 107 ] || die "DIR is too long for a unix socket path (${#dir} bytes; at most 89): $dir"

  if [ -d "$dir/data" ]; then
    [ -f "$dir/data/PG_VERSION" ] || die "$dir/data exists but is not a PostgreSQL cluster"
    [ "$(stat -c %U "$dir/data")" = "$user" ] || die "the cluster in $dir belongs to $(stat -c %U "$dir/data"), not $user"
  else
    if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
      die "$dir exists and is not empty; give an empty or new directory"
    fi
    local created=
    [ -d "$dir" ] || { mkdir -p "$dir"; created=1; }
    if [ "$(id -u)" -eq 0 ]; then chown "$user": "$dir"; fi
    chmod 700 "$dir"
    if ! as_user test -w "$dir"; then
      [ -z "$created" ] || rmdir "$dir"
      die "user $user cannot write $dir (is a parent directory closed to it, like /root? use a directory under /tmp)"
    fi
    note "creating a cluster in $dir/data as $user with $bindir"
    as_user "$bindir/initdb" -D "$dir/data" -U "$user" --auth-local=trust --auth-host=trust \
        --encoding=UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 \
      || die "initdb failed; see $dir/initdb.log:"$'\n'"$(tail -n 20 "$dir/initdb.log")"
    echo "include_if_exists = 'tiersync-test.conf'" >>"$dir/data/postgresql.conf"
  fi

  if running; then
    port=$(running_port)
    if [ -n "$requested" ] && [ "$requested" != "$port" ]; then
      die "the cluster in $dir already runs on port $port, not $requested: stop it first"
    fi
    note "the cluster in $dir already runs on port $port"
  else
    local attempt=0
    while :; do
      attempt=$((attempt + 1))
      if [ -n "$requested" ]; then
        port=$requested
        ! port_in_use "$port" || die "port $port on 127.0.0.1 is already in use"
      else
        port=$(random_free_port)
      fi
      write_settings "$port"
      if as_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null 2>&1; then
        break
      fi
      # A port taken between the check and the bind: try another, when we chose it.
      if [ -z "$requested" ] && [ $attempt -lt 5 ] && tail -n 20 "$dir/postgres.log" | grep -q "could not bind"; then
        note "port $port was taken meanwhile; trying another"
        continue
      fi
      die "PostgreSQL did not start; see $dir/postgres.log:"$'\n'"$(tail -n 20 "$dir/postgres.log" 2>/dev/null)"
    done
    note "started on 127.0.0.1:$port (log: $dir/postgres.log)"
  fi

  if [ "$(psql_tcp -c "SELECT 1 FROM pg_database WHERE datname = 'tiersync_test'")" != "1" ]; then
    psql_tcp -c "CREATE DATABASE tiersync_test" >/dev/null || die "could not create database tiersync_test"
  fi
  echo "postgres://$user@127.0.0.1:$port/tiersync_test"
}

stop() {
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    note "no cluster in $dir: nothing to stop"
    return 0
  fi
  if ! running; then
    note "the cluster in $dir is not running"
    return 0
  fi
  if ! as_user "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1; then
    note "fast shutdown did not finish in 60 s; stopping immediately"
    as_user "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 \
      || die "could not stop the cluster in $dir; see $dir/postgres.log"
  fi
  note "stopped the cluster in $dir"
}

[ $# -ge 2 ] || usage
command=$1
dir=$2
[ -n "$dir" ] || usage
dir=$(realpath -m -- "$dir")
bindir=$(find_bindir)
case "$command" in
  start)
    [ $# -le 3 ] || usage
    user=$(cluster_user)
    start "${3:-}"
    ;;
  stop)
    [ $# -eq 2 ] || usage
    # The cluster's owner, whoever runs this (root stopping a tiersync-ci cluster).
    if [ -d "$dir/data" ]; then user=$(stat -c %U "$dir/data"); else user=$(id -un); fi
    if [ "$(id -u)" -ne 0 ] && [ "$user" != "$(id -un)" ]; then die "the cluster in $dir belongs to $user; stop it as $user or root"; fi
    stop
    ;;
  *) usage ;;
esac
