# shellcheck shell=bash
# Sandbox MySQL 9.7 servers for the demo and the benchmarks, started from the test bed's
# initialised template datadir. Source this file after running scripts/testbed.
#
#   sandbox_start DIR PORT SERVER_ID [mysqld options...]   start a fresh server in DIR
#   sandbox_start_on DIR PORT SERVER_ID [options...]       start one on the existing DIR/data
#   sandbox_sql PORT SQL...                                 run SQL as root
#   sandbox_stop DIR                                        stop it (clean shutdown)

TB=${MYVAULT_TESTBED:-/opt/myvault-testbed}
# shellcheck disable=SC1091
. "$TB/testbed.env"

sandbox_start() {
  local dir=$1
  rm -rf "$dir"; mkdir -p "$dir"
  cp -a --reflink=auto "$MYVAULT_TEMPLATE_97" "$dir/data"
  sandbox_start_on "$@"
}

sandbox_start_on() {
  local dir=$1 port=$2 id=$3; shift 3
  mkdir -p "$dir/run"
  "$MYVAULT_MYSQLD_97" --no-defaults --datadir="$dir/data" --user=root \
    --port="$port" --bind-address=127.0.0.1 --socket="$dir/run/mysqld.sock" \
    --pid-file="$dir/run/mysqld.pid" --log-error="$dir/run/error.log" --mysqlx=OFF \
    --secure-file-priv= --local-infile=1 --server-id="$id" --log-bin=binlog \
    --gtid-mode=ON --enforce-gtid-consistency=ON "$@" >/dev/null 2>&1 &
  for _ in $(seq 1 600); do
    if "$MYVAULT_MYSQL_97" -uroot -h127.0.0.1 -P"$port" -e 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$!" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "sandbox: the server in $dir did not start; its error log ends with:" >&2
  tail -20 "$dir/run/error.log" >&2
  return 1
}

sandbox_sql() {
  local port=$1; shift
  "$MYVAULT_MYSQL_97" -uroot -h127.0.0.1 -P"$port" -N -B -e "$*"
}

sandbox_stop() {
  local dir=$1 pid
  [ -f "$dir/run/mysqld.pid" ] || return 0
  pid=$(cat "$dir/run/mysqld.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# A port that is free now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
