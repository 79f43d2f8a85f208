#!/bin/sh
# The Postgres image's entrypoint, after a copy of the server's TLS key that Postgres
# accepts: owned by postgres, mode 0600 (a compose secret keeps the host's owner and mode).
set -eu
install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/tls
install -o postgres -g postgres -m 0600 /run/secrets/server-key.pem /var/lib/postgresql/tls/
exec docker-entrypoint.sh "$@"
