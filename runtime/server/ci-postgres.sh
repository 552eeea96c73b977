#!/usr/bin/env bash
# Installs PostgreSQL from Debian packages (if missing), starts a cluster, creates a login role
# allowed to create databases and a database, and prints the URL to export as
# PHASEBOX_TEST_POSTGRES_URL. The server tests create one fresh database per test on that
# server. Everything but the URL goes to stderr. Needs root (apt-get, su postgres).
#
#   export PHASEBOX_TEST_POSTGRES_URL="$(bash runtime/server/ci-postgres.sh)"
#   cargo test -p phasebox-server
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
    pg_createcluster "$version" main >&2
fi
read -r cluster_version cluster_name port _ < <(pg_lsclusters -h | head -n 1)
pg_ctlcluster "$cluster_version" "$cluster_name" start >&2 2>/dev/null || true
# Wait until it accepts connections.
for _ in $(seq 1 30); do
    if su postgres -c "pg_isready -q -p $port"; then break; fi
    sleep 1
done

su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -q" >&2 <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'phasebox') THEN
        CREATE ROLE phasebox LOGIN PASSWORD 'phasebox' CREATEDB;
    END IF;
END
$$;
SQL
if ! su postgres -c "psql -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname = 'phasebox_test'\"" | grep -q 1; then
    su postgres -c "createdb -p $port -O phasebox phasebox_test" >&2
fi

echo "postgres://phasebox:phasebox@127.0.0.1:$port/phasebox_test"
