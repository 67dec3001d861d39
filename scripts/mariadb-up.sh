#!/usr/bin/env bash
# Makes sure MariaDB answers on 127.0.0.1:3306 as root with an empty password (the MySQL tests
# use it), starting the server if it is down.
set -euo pipefail

ping() { mysqladmin --protocol=tcp -h127.0.0.1 -P3306 -uroot --connect-timeout=2 ping >/dev/null 2>&1; }

if ! ping; then
    if ! pgrep -x mariadbd >/dev/null 2>&1; then
        [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    fi
    for _ in $(seq 1 60); do
        ping && break
        # A fresh install lets root in only over the socket: allow the empty password over TCP.
        mysql -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket" >/dev/null 2>&1 || true
        sleep 1
    done
fi
ping || { echo "MariaDB is not reachable on 127.0.0.1:3306 as root" >&2; exit 1; }
mysql --protocol=tcp -h127.0.0.1 -uroot -e "CREATE DATABASE IF NOT EXISTS test"
echo "MariaDB is up on 127.0.0.1:3306"
