#!/bin/sh
# Test stand-in for the official postgres image's entrypoint (see README.md): on first start,
# a cluster in $PGDATA whose superuser is $POSTGRES_USER with $POSTGRES_PASSWORD (SCRAM over
# TCP, trust on the local socket, as upstream), listening on every address unless the command
# says otherwise, and the database $POSTGRES_DB. Then the command runs.
set -eu
if [ "${1:-}" = "postgres" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
    user="${POSTGRES_USER:-postgres}"
    database="${POSTGRES_DB:-$user}"
    password_file="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --username="$user" --pwfile="$password_file" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 -D "$PGDATA" >/dev/null
    rm -f "$password_file"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$database" != "postgres" ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
        createdb --username="$user" "$database"
        pg_ctl -D "$PGDATA" -m fast -w -s stop
    fi
    echo "docker-entrypoint.sh: initialized $PGDATA with database $database"
fi
exec "$@"
