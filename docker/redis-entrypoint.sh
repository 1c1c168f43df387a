#!/bin/sh
# redis-entrypoint serve:  writes the configuration (password included) to /run/redis, then runs redis-server
#                          in the foreground: all interfaces of the container, port 6379, appendonly yes, data in
#                          /var/lib/redis.
# redis-entrypoint health: exits 0 when `redis-cli ping` answers PONG with the password (the image's health check).
#
# The password: REDIS_PASSWORD, or the contents of the file named by REDIS_PASSWORD_FILE (a compose secret).
# It never appears on a command line (where `ps` on the host would show it).
set -eu

password() {
  if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    [ -r "$REDIS_PASSWORD_FILE" ] || { echo "redis-entrypoint: cannot read REDIS_PASSWORD_FILE=$REDIS_PASSWORD_FILE" >&2; exit 1; }
    # The first line, without its newline (an editor's trailing newline is not part of the password).
    head -n1 "$REDIS_PASSWORD_FILE" | tr -d '\r\n'
  else
    printf '%s' "${REDIS_PASSWORD:-}"
  fi
}

case "${1:-serve}" in
  health)
    REDISCLI_AUTH=$(password) && export REDISCLI_AUTH
    # redis-cli exits 0 on an error reply too (NOAUTH, LOADING): only PONG counts.
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
    ;;
  serve)
    pw=$(password)
    case "$pw" in
      ""|change-me|changeme|secret|password|redis)
        echo "redis-entrypoint: set REDIS_PASSWORD or REDIS_PASSWORD_FILE to a real password (got an empty or placeholder one)" >&2
        exit 1 ;;
    esac
    case "$pw" in
      *[!A-Za-z0-9._~-]*)
        echo "redis-entrypoint: use only letters, digits and . _ ~ - in the password (it goes into redis:// URLs unescaped)" >&2
        exit 1 ;;
    esac
    conf=/run/redis/redis.conf
    umask 077
    cat >"$conf" <<CONF
bind * -::*
port 6379
protected-mode yes
requirepass $pw
dir /var/lib/redis
appendonly yes
appendfsync everysec
daemonize no
supervised no
logfile ""
CONF
    exec redis-server "$conf"
    ;;
  *)
    exec "$@" ;;
esac
