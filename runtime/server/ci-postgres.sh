#!/usr/bin/env bash
# Installs PostgreSQL from Debian packages (if missing), starts a cluster, creates a login role
# allowed to create databases and a database, and prints the URL to export as
# PHASEBOX_TEST_POSTGRES_URL. The server tests create one fresh database per test on that
# server; this script drops those of earlier runs. Everything but the URL goes to stderr. Runs
# as root, or as a user with sudo.
#
#   export PHASEBOX_TEST_POSTGRES_URL="$(bash runtime/server/ci-postgres.sh)"
#   cargo test -p phasebox-server
set -euo pipefail
cd / # the postgres user may not enter the caller's directory

# Everything runs with stdout sent to stderr; only the URL is printed to the caller's stdout, at
# the very end. The caller's stdout is usually the pipe of a command substitution, which returns
# only when every holder of that pipe has closed it: the PostgreSQL server started below must not
# inherit it, or the caller waits forever. Bash saves the stdout it redirects for a function call
# on a close-on-exec descriptor; the server is also started with every descriptor above stderr
# closed (a CI runner's pipes included) and /dev/null as stdin.
without_inherited_fds() {
    (
        for fd in /proc/$BASHPID/fd/*; do
            n=${fd##*/}
            if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi
        done
        exec "$@" </dev/null
    )
}

set_up_postgres() {

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
    as_postgres() { runuser -u postgres -- "$@"; }
else
    if ! command -v sudo >/dev/null; then
        echo "ci-postgres.sh: needs root or sudo (apt-get, pg_ctlcluster, the postgres user)" >&2
        exit 1
    fi
    SUDO=(sudo)
    as_postgres() { sudo -u postgres -- "$@"; }
fi

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null; then
    "${SUDO[@]}" apt-get update -qq
    without_inherited_fds "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
fi

# The package normally creates and starts cluster "main"; without an init system (containers)
# or with a policy that forbids starting services, it may be missing or down.
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
    without_inherited_fds "${SUDO[@]}" pg_createcluster "$version" main
fi
read -r cluster_version cluster_name port status _ < <(pg_lsclusters -h | head -n 1)
if [ "$status" != "online" ]; then
    without_inherited_fds "${SUDO[@]}" pg_ctlcluster "$cluster_version" "$cluster_name" start
fi
ready=""
for _ in $(seq 1 60); do
    if as_postgres pg_isready -q -p "$port"; then
        ready=1
        break
    fi
    sleep 1
done
if [ -z "$ready" ]; then
    echo "ci-postgres.sh: PostgreSQL $cluster_version/$cluster_name did not accept connections on port $port" >&2
    pg_lsclusters >&2 || true
    exit 1
fi

# A role that may create the per-test databases, with a known password (set again on every run,
# so an existing role works too), and the database named in the URL.
as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -q <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'phasebox') THEN
        CREATE ROLE phasebox LOGIN PASSWORD 'phasebox' CREATEDB;
    ELSE
        ALTER ROLE phasebox LOGIN PASSWORD 'phasebox' CREATEDB;
    END IF;
END
$$;
SQL
if ! as_postgres psql -p "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = 'phasebox_test'" | grep -q 1; then
    as_postgres createdb -p "$port" -O phasebox phasebox_test
fi

# Databases left by earlier test and benchmark runs (each test makes its own).
as_postgres psql -p "$port" -tA -c "SELECT datname FROM pg_database WHERE datname ~ '^phasebox_(test|bench)_[0-9a-f]+$'" |
    while read -r stale; do
        as_postgres dropdb -p "$port" --if-exists "$stale"
    done

# Check the URL works over TCP with the password before handing it out.
url="postgres://phasebox:phasebox@127.0.0.1:$port/phasebox_test"
if ! PGPASSWORD=phasebox psql -h 127.0.0.1 -p "$port" -U phasebox -d phasebox_test -tAc 'SELECT 1' | grep -q 1; then
    echo "ci-postgres.sh: cannot log in as phasebox over TCP on port $port (check pg_hba.conf)" >&2
    exit 1
fi
}

url=""
set_up_postgres >&2
echo "$url"
