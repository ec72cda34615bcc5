#!/bin/bash
# Entrypoint of the Document Server stand-in, shaped like the real image's script of the same name:
#  1. rewrite /etc/onlyoffice/documentserver/local.json from env (random JWT/secure-link secrets
#     when unset, new at every start);
#  2. wait (bounded) for the database, then run removetbl.sql + createdb.sql when the image's release
#     date differs from Data/.private/ds_release_date, createdb.sql otherwise;
#  3. run supervisord (nginx, ds:docservice, ds:converter; ds:example has autostart=false);
#  4. on SIGTERM, with ONLYOFFICE_DATA_CONTAINER=false and ONLYOFFICE_DATA_CONTAINER_HOST=localhost
#     (the defaults), call PUT /internal/cluster/inactive -- a broadcast over RabbitMQ that makes
#     every node sharing the broker refuse new editors -- before stopping supervisor.
set -uo pipefail

ONLYOFFICE_DATA_CONTAINER="${ONLYOFFICE_DATA_CONTAINER:-false}"
ONLYOFFICE_DATA_CONTAINER_HOST="${ONLYOFFICE_DATA_CONTAINER_HOST:-localhost}"
NGINX_WORKER_PROCESSES="${NGINX_WORKER_PROCESSES:-1}"
NGINX_WORKER_CONNECTIONS="${NGINX_WORKER_CONNECTIONS:-$(ulimit -n)}"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) run-document-server: $*"; }

mkdir -p /var/log/onlyoffice/documentserver/docservice /var/log/onlyoffice/documentserver/converter \
         /var/log/onlyoffice/documentserver-example /var/lib/onlyoffice/documentserver/App_Data/cache/files \
         /var/www/onlyoffice/Data/.private
chown -R ds:ds /var/log/onlyoffice /var/lib/onlyoffice

/app/ds/ds-config || { log "cannot write local.json"; exit 1; }

sed -ri "s/^(\s*worker_processes)\s+.*;/\1 ${NGINX_WORKER_PROCESSES};/" /etc/nginx/nginx.conf
sed -ri "s/^(\s*worker_connections)\s+.*;/\1 ${NGINX_WORKER_CONNECTIONS};/" /etc/nginx/nginx.conf

/app/ds/ds-schema || { log "database schema step failed; exiting"; exit 1; }

supervisord -n -c /etc/supervisor/supervisord.conf &
SUPERVISOR_PID=$!

on_term() {
  if [ "$ONLYOFFICE_DATA_CONTAINER" = "false" ] && [ "$ONLYOFFICE_DATA_CONTAINER_HOST" = "localhost" ]; then
    log "SIGTERM: shutting the cluster down (PUT /internal/cluster/inactive, broadcast to every node on the broker)"
    curl -s -m 5 -X PUT http://localhost:8000/internal/cluster/inactive >/dev/null \
      || log "SIGTERM: PUT /internal/cluster/inactive failed"
  else
    log "SIGTERM: ONLYOFFICE_DATA_CONTAINER=${ONLYOFFICE_DATA_CONTAINER} ONLYOFFICE_DATA_CONTAINER_HOST=${ONLYOFFICE_DATA_CONTAINER_HOST}: no cluster shutdown"
  fi
  log "stopping supervisor"
  kill -TERM "$SUPERVISOR_PID" 2>/dev/null
  wait "$SUPERVISOR_PID"
  exit 0
}
trap on_term TERM INT

log "started; supervisor pid ${SUPERVISOR_PID}"
wait "$SUPERVISOR_PID"
log "supervisor exited"
