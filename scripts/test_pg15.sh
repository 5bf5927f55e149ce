#!/usr/bin/env bash
# `make test-pg15`: the whole suite against Debian's PostgreSQL 15 (the production version) with
# pgvector built from the source tarball named by PGVECTOR_SRC.
#
# Nothing outside the project is changed: Debian's PostgreSQL 15 installation is mirrored with
# hard links into a private prefix under .pg15/ (PostgreSQL finds its share and lib directories
# relative to its own executable), pgvector is built from the tarball and installed into that
# prefix only, and a throwaway cluster (initdb as the `postgres` user when run as root) listens on
# 127.0.0.1 on a free port and a private socket directory. The cluster is stopped and deleted on
# every exit, failure included. Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# A relative PGVECTOR_SRC is relative to where the command was started; the default to the root.
PGVECTOR_SRC=${PGVECTOR_SRC:-$ROOT/../shared/vendor/pgvector-0.8.6.tar.gz}
[ -f "$PGVECTOR_SRC" ] && PGVECTOR_SRC=$(cd "$(dirname "$PGVECTOR_SRC")" && pwd)/$(basename "$PGVECTOR_SRC")
cd "$ROOT"

PG_BIN=${PG15_BIN:-/usr/lib/postgresql/15/bin}
WORK=${PG15_WORK_DIR:-$ROOT/.pg15}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

say() { printf 'test-pg15: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }

[ -f "$PGVECTOR_SRC" ] || die "no pgvector source tarball at PGVECTOR_SRC=$PGVECTOR_SRC"
[ -x "$PG_BIN/postgres" ] || die "no PostgreSQL 15 at $PG_BIN (apt-get install postgresql-15)"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
# The server headers and a compiler, from Debian, when missing.
if [ ! -f /usr/include/postgresql/15/server/postgres.h ] || ! command -v gcc >/dev/null; then
  say "installing postgresql-server-dev-15 and build-essential"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    postgresql-server-dev-15 build-essential >/dev/null
fi

# 1. A private mirror of the PostgreSQL 15 installation, with pgvector added. Rebuilt when the
#    tarball or the server changes (the stamp names both).
PREFIX=$WORK/prefix
SYS_PG_CONFIG=$PG_BIN/pg_config
STAMP="$(sha256sum "$PGVECTOR_SRC" | cut -c1-16)-$("$SYS_PG_CONFIG" --version | tr -c 'A-Za-z0-9.\n' _)"
BIN=$PREFIX/usr/lib/postgresql/15/bin
if [ "$(cat "$WORK/prefix.stamp" 2>/dev/null || true)" != "$STAMP" ]; then
  say "building pgvector from $PGVECTOR_SRC against $("$SYS_PG_CONFIG" --version)"
  rm -rf "$PREFIX" "$WORK/build" "$WORK/prefix.stamp"
  mkdir -p "$PREFIX/usr/lib/postgresql" "$PREFIX/usr/share/postgresql" "$WORK/build"
  # Hard links, not symbolic ones: PostgreSQL resolves symlinks to its executable and would
  # then look for its files in the system directories again. Copies where /usr is elsewhere.
  cp -al "$PG_BIN/../../15" "$PREFIX/usr/lib/postgresql/" 2>/dev/null \
    || cp -a "$PG_BIN/../../15" "$PREFIX/usr/lib/postgresql/"
  cp -al "$("$SYS_PG_CONFIG" --sharedir)" "$PREFIX/usr/share/postgresql/" 2>/dev/null \
    || cp -a "$("$SYS_PG_CONFIG" --sharedir)" "$PREFIX/usr/share/postgresql/"
  # Never write through a hard link into the system's files: unlink any vector files first.
  rm -f "$PREFIX"/usr/lib/postgresql/15/lib/vector.so \
    "$PREFIX"/usr/share/postgresql/15/extension/vector[.-]*
  tar -xzf "$PGVECTOR_SRC" -C "$WORK/build" --strip-components=1
  make -s -C "$WORK/build" PG_CONFIG="$SYS_PG_CONFIG" OPTFLAGS="" >/dev/null
  make -s -C "$WORK/build" install PG_CONFIG="$SYS_PG_CONFIG" DESTDIR="$PREFIX" >/dev/null
  echo "$STAMP" >"$WORK/prefix.stamp"
fi
[ -f "$PREFIX/usr/share/postgresql/15/extension/vector.control" ] || die "pgvector not installed"
[ "$("$BIN/pg_config" --sharedir)" = "$PREFIX/usr/share/postgresql/15" ] \
  || die "PostgreSQL did not relocate to $PREFIX (pg_config --sharedir: $("$BIN/pg_config" --sharedir))"

# 2. A throwaway cluster. initdb refuses to run as root: then the cluster belongs to `postgres`.
RUN=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user to own the cluster"
  RUN=(runuser -u postgres --)
fi
CLUSTER=$(mktemp -d "$WORK/cluster.XXXXXX")
chmod 755 "$WORK" "$CLUSTER"
[ ${#RUN[@]} -eq 0 ] || chown postgres "$CLUSTER"
DATA=$CLUSTER/data
SOCKETS=$CLUSTER/sockets
"${RUN[@]}" mkdir -m 700 "$SOCKETS"
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cleanup() {
  status=$?
  if [ -f "$DATA/postmaster.pid" ]; then
    "${RUN[@]}" "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$CLUSTER"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"${RUN[@]}" "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
  >"$CLUSTER/initdb.log" 2>&1 || { cat "$CLUSTER/initdb.log" >&2; die "initdb failed"; }
# Loopback only; the suite opens a few pools per session, and its own servers in some tests.
"${RUN[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$CLUSTER/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$SOCKETS -c max_connections=300 -c fsync=off" \
  start >/dev/null || { cat "$CLUSTER/server.log" >&2; die "PostgreSQL 15 did not start"; }
SERVER_VERSION=$("${RUN[@]}" "$BIN/psql" -h "$SOCKETS" -p "$PORT" -U postgres -d postgres -qAt \
  -c "CREATE EXTENSION vector" \
  -c "SELECT current_setting('server_version') || ', pgvector ' || extversion FROM pg_extension WHERE extname = 'vector'" \
  -c "DROP EXTENSION vector")
say "PostgreSQL $SERVER_VERSION on 127.0.0.1:$PORT"

# 3. The whole suite; conftest.py creates (and drops) a fresh database on this server. The
# pages' real-browser tests exercise the pages, not the database version: they run once, in
# `make test`, not a second time here.
export DATABASE_URL="postgresql://postgres@127.0.0.1:$PORT/postgres"
started=$(date +%s)
set +e
"$PYTHON" -m pytest \
  --ignore=tests/llm_service/investigations/test_workbench_page.py \
  --ignore=tests/llm_service/finance/test_finance_page.py \
  "$@"
result=$?
set -e
say "pytest exited $result after $(($(date +%s) - started)) s against PostgreSQL $SERVER_VERSION"
exit "$result"
