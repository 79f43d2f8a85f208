-- Run once by the MariaDB image when it makes the cup's database (docker-entrypoint-initdb.d),
-- after it made the account MARIADB_USER with every right on MARIADB_DATABASE: the cup's
-- account keeps only what a cup needs, as on the local stack
-- (deploy/local/mariadb_databases.py, CUP_PRIVILEGES): no DROP, no SUPER.
REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'smallcups'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, TRIGGER, LOCK TABLES,
    CREATE TEMPORARY TABLES ON `smallcups_mysql_cup_0`.* TO 'smallcups'@'%';
