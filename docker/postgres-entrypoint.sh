#!/bin/sh
# postgres-entrypoint postgres [-c name=value ...]: on the first start (no $PGDATA/PG_VERSION) creates the
# data directory with initdb, the login role $POSTGRES_USER with the password and the database $POSTGRES_DB it
# owns; then runs the server in the foreground on all interfaces of the container, port 5432.
#
# The password: POSTGRES_PASSWORD, or the contents of the file named by POSTGRES_PASSWORD_FILE (a compose
# secret). It is read on the first start only: changing it later takes `ALTER ROLE ... PASSWORD` (see
# docs/deployment.md). It never appears on a command line.
#
# The set-up is atomic: it happens in $PGDATA.init, renamed to $PGDATA when complete; a start that finds a
# $PGDATA.init left by an interrupted one removes it and starts over.
set -eu

die() { echo "postgres-entrypoint: $*" >&2; exit 1; }

password() {
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    [ -r "$POSTGRES_PASSWORD_FILE" ] || die "cannot read POSTGRES_PASSWORD_FILE=$POSTGRES_PASSWORD_FILE"
    head -n1 "$POSTGRES_PASSWORD_FILE" | tr -d '\r\n'
  else
    printf '%s' "${POSTGRES_PASSWORD:-}"
  fi
}

init_cluster() {
  pw=$(password)
  case "$pw" in
    ""|change-me|changeme|secret|password|postgres|grader)
      die "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE to a real password (got an empty or placeholder one)" ;;
  esac
  case "$pw" in
    *[!A-Za-z0-9._~-]*)
      die "use only letters, digits and . _ ~ - in the password (it goes into postgresql:// URLs unescaped)" ;;
  esac
  case "$POSTGRES_USER$POSTGRES_DB" in
    *[!A-Za-z0-9_]*) die "POSTGRES_USER and POSTGRES_DB: letters, digits and _ only" ;;
  esac
  tmp=$PGDATA.init
  rm -rf "$tmp"
  echo "postgres-entrypoint: first start: creating $PGDATA (role and database $POSTGRES_USER/$POSTGRES_DB)"
  initdb -D "$tmp" --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
         --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # Clients from other containers and machines, password (scram-sha-256) only.
  printf '%s\n' "host all all 0.0.0.0/0 scram-sha-256" "host all all ::/0 scram-sha-256" >>"$tmp/pg_hba.conf"
  sock=$(mktemp -d)
  pg_ctl -D "$tmp" -w -s -o "-c listen_addresses='' -c unix_socket_directories=$sock" start
  esc=$(printf '%s' "$pw" | sed "s/'/''/g")
  psql -h "$sock" -U postgres -d postgres -q -v ON_ERROR_STOP=1 --no-psqlrc >/dev/null <<SQL
SET password_encryption = 'scram-sha-256';
CREATE ROLE $POSTGRES_USER LOGIN PASSWORD '$esc';
CREATE DATABASE $POSTGRES_DB OWNER $POSTGRES_USER;
REVOKE ALL ON DATABASE $POSTGRES_DB FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE $POSTGRES_DB TO $POSTGRES_USER;
SQL
  # PostgreSQL 15: only the database owner creates objects in public; the owner is the grader's role.
  psql -h "$sock" -U postgres -d "$POSTGRES_DB" -q -v ON_ERROR_STOP=1 --no-psqlrc \
       -c "ALTER SCHEMA public OWNER TO $POSTGRES_USER" >/dev/null
  pg_ctl -D "$tmp" -w -s -m fast stop
  rmdir "$sock"
  mv "$tmp" "$PGDATA"
  echo "postgres-entrypoint: $PGDATA created"
}

if [ "${1:-}" = "postgres" ]; then
  shift
  [ "$(id -u)" != 0 ] || die "run as the postgres user, not root"
  [ -s "$PGDATA/PG_VERSION" ] || init_cluster
  exec postgres -D "$PGDATA" -c listen_addresses='*' -c port=5432 "$@"
fi
exec "$@"
