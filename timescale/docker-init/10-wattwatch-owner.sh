#!/bin/sh
# Runs once, inside the timescaledb container, when its data volume is first initialised
# (docker-entrypoint-initdb.d). Creates the role that owns the wattwatch database and runs the
# migrations, so that no wattwatch service ever connects as the superuser. Safe to run again.
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v owner_password="$WATTWATCH_OWNER_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE wattwatch_owner LOGIN CREATEROLE PASSWORD %L', :'owner_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wattwatch_owner') \gexec
COMMENT ON ROLE wattwatch_owner IS 'Owns the wattwatch database; runs wattwatch db migrate';
SELECT format('ALTER DATABASE %I OWNER TO wattwatch_owner', current_database()) \gexec
CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
