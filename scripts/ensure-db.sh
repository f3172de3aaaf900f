#!/usr/bin/env bash
# Make sure the local MySQL/MariaDB server the tests and `backbone dev` use
# answers on 127.0.0.1:3306; start MariaDB when it does not (as on a fresh
# development machine or CI), and fail loudly if it will not come up.
set -euo pipefail

ping_db() { mysqladmin --protocol=tcp -h 127.0.0.1 -P 3306 -u root status >/dev/null 2>&1; }

# Parallel test packages each open their own pools (one database per test):
# make sure the server allows enough connections for that.
raise_connections() {
  mysql --protocol=tcp -h 127.0.0.1 -P 3306 -u root -e \
    "SET GLOBAL max_connections = GREATEST(@@max_connections, 600)" >/dev/null 2>&1 || true
}

if ping_db; then
  raise_connections
  exit 0
fi
echo "MariaDB is not answering on 127.0.0.1:3306: starting it" >&2
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  echo "mariadbd is not installed: apt-get install mariadb-server" >&2
  exit 1
fi
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld 2>/dev/null || true
start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
for _ in $(seq 1 60); do
  if ping_db; then
    echo "MariaDB is up" >&2
    raise_connections
    exit 0
  fi
  sleep 1
done
echo "MariaDB did not come up within 60s" >&2
exit 1
