#!/usr/bin/env bash
# Start a local PostgreSQL for the server's store tests and print its URL (the only line on stdout):
#     postgresql://brewnet:<password>@127.0.0.1:<port>/postgres
# Debian, as root.  Installs Debian's `postgresql` when pg_ctlcluster is missing, uses the first
# cluster pg_lsclusters lists (creates one when there is none), starts it, creates the role
# `brewnet` (LOGIN CREATEDB: the tests create and drop their own database), and waits until it
# accepts a password login over TCP.  Idempotent: run it again and it prints the same URL.
# The password is BREWNET_PG_PASSWORD when set, else one made on the first run and kept in
# /var/lib/postgresql/brewnet-ci-password (root-only), so a second run does not change it under
# a test run that already uses it.
#
#     scripts/ci_postgres.sh stop   stops the cluster again if (and only if) this script started it
#
# Daemons started here (the cluster, and whatever apt-get's postinst starts) get fd 3 closed and
# stdin from /dev/null: fd 3 is the caller's $(...) pipe, and a daemon holding it open would make
# the caller wait for ever.
set -euo pipefail
exec 3>&1 1>&2          # everything but the URL goes to stderr

die() { echo "ci_postgres.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (it installs and starts PostgreSQL)"

if [ "${1:-}" = "stop" ] && ! command -v pg_ctlcluster >/dev/null 2>&1; then
  exit 0   # nothing was installed, so nothing was started
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null </dev/null 3>&-
  installed_here=1
fi

cluster_line() { pg_lsclusters --no-header 2>/dev/null | head -n 1; }
line="$(cluster_line)"
if [ -z "$line" ]; then
  version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
  [ -n "$version" ] || die "no PostgreSQL server under /usr/lib/postgresql"
  pg_createcluster "$version" main </dev/null 3>&-
  line="$(cluster_line)"
fi
read -r version cluster port status _ <<<"$line"
started_marker=/var/lib/postgresql/brewnet-ci-started
# a cluster that Debian's postinst started while this script installed PostgreSQL counts as ours
if [ "${installed_here:-0}" = 1 ]; then touch "$started_marker"; fi
if [ "${1:-}" = "stop" ]; then
  if [ -e "$started_marker" ] && [ "$status" = "online" ]; then
    pg_ctlcluster "$version" "$cluster" stop </dev/null 3>&-
  fi
  rm -f "$started_marker"
  exit 0
fi
if [ "$status" != "online" ]; then
  pg_ctlcluster "$version" "$cluster" start </dev/null 3>&-
  touch "$started_marker"
fi

pwfile=/var/lib/postgresql/brewnet-ci-password
if [ -n "${BREWNET_PG_PASSWORD:-}" ]; then
  password="$BREWNET_PG_PASSWORD"
elif [ -s "$pwfile" ]; then
  password="$(cat "$pwfile")"
else
  # URL-safe characters only: the password goes into the URL unquoted
  password="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
  (umask 077 && printf '%s\n' "$password" >"$pwfile")
fi

# the local socket answers before TCP does on a fresh start: wait for it, then for TCP
for _ in $(seq 1 120); do
  pg_isready -q -p "$port" && break
  sleep 0.5
done
pg_isready -q -p "$port" || die "cluster $version/$cluster on port $port does not accept connections"

runuser -u postgres -- psql -p "$port" -X -q -v ON_ERROR_STOP=1 -v pw="$password" -d postgres <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'brewnet') AS missing \gset
\if :missing
CREATE ROLE brewnet LOGIN CREATEDB;
\endif
ALTER ROLE brewnet WITH LOGIN CREATEDB PASSWORD :'pw';
SQL

for _ in $(seq 1 120); do
  PGPASSWORD="$password" psql -X -q -h 127.0.0.1 -p "$port" -U brewnet -d postgres -c 'SELECT 1' \
    >/dev/null 2>&1 && break
  sleep 0.5
done
PGPASSWORD="$password" psql -X -q -h 127.0.0.1 -p "$port" -U brewnet -d postgres -c 'SELECT 1' >/dev/null \
  || die "role brewnet cannot log in over TCP on 127.0.0.1:$port (pg_hba.conf?)"

echo "postgresql://brewnet:${password}@127.0.0.1:${port}/postgres" >&3
