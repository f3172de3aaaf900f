-- Exact identity (SPEC §3, §4): 'C-1', 'c-1', 'C-1 ' and 'C-😀' are four
-- records. utf8mb4_bin, used until now, is a PAD SPACE collation on both
-- MariaDB and MySQL 8: it compares 'C-1' = 'C-1 ', so a trailing space joined
-- another record's chain, state and delivery guard. This step moves every
-- CHAR/VARCHAR column of the backbone tables (record_type, record_id,
-- source, message ids, stages, ...) and the tables' default to a NO PAD
-- binary collation, which compares byte for byte. Column names, types,
-- nullability and index names stay as V10 has them.
--
-- The collation has a different name on each server: utf8mb4_0900_bin on
-- MySQL 8 (8.0.17+), utf8mb4_nopad_bin on MariaDB (10.2+). The step picks the
-- one the server has and builds the ALTER TABLE statements from
-- information_schema, so it also covers the columns earlier steps added
-- (docs/mariadb.md says why a collation rather than VARBINARY).
--
-- Down: back to utf8mb4_bin. It fails (duplicate entry) if the tables hold
-- two records that differ only in trailing spaces: PAD SPACE cannot tell them
-- apart, and losing one would be worse than refusing.

-- +goose Up
SET @backbone_collation = (
    SELECT COLLATION_NAME FROM information_schema.COLLATIONS
    WHERE COLLATION_NAME IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin')
    ORDER BY COLLATION_NAME = 'utf8mb4_0900_bin' DESC LIMIT 1);

-- +goose StatementBegin
CREATE PROCEDURE backbone_recollate(IN target VARCHAR(64), IN from_collations VARCHAR(255))
BEGIN
    DECLARE tbl VARCHAR(64);
    DECLARE i INT DEFAULT 0;
    DECLARE mariadb BOOLEAN DEFAULT VERSION() LIKE '%MariaDB%';
    IF target IS NULL THEN
        SIGNAL SQLSTATE '45000'
            SET MESSAGE_TEXT = 'no NO PAD binary utf8mb4 collation (utf8mb4_0900_bin or utf8mb4_nopad_bin) on this server';
    END IF;
    loop_tables: LOOP
        SET i = i + 1;
        IF i > 3 THEN
            LEAVE loop_tables;
        END IF;
        SET tbl = ELT(i, 'events', 'event_audit_log', 'dead_letters');
        -- One ALTER per table: every CHAR/VARCHAR column still in
        -- from_collations, restated with its type, nullability and default
        -- (MariaDB reports a default as an SQL literal, MySQL as the bare
        -- value), plus the table default for columns added later.
        SET @backbone_ddl = (
            SELECT CONCAT('ALTER TABLE `', tbl, '` ',
                GROUP_CONCAT(CONCAT('MODIFY `', COLUMN_NAME, '` ', COLUMN_TYPE,
                    ' CHARACTER SET utf8mb4 COLLATE ', target,
                    IF(IS_NULLABLE = 'NO', ' NOT NULL', ' NULL'),
                    CASE
                        WHEN COLUMN_DEFAULT IS NULL OR (mariadb AND COLUMN_DEFAULT = 'NULL') THEN ''
                        WHEN mariadb THEN CONCAT(' DEFAULT ', COLUMN_DEFAULT)
                        ELSE CONCAT(' DEFAULT ', QUOTE(COLUMN_DEFAULT))
                    END)
                    ORDER BY ORDINAL_POSITION SEPARATOR ', '),
                ', DEFAULT CHARACTER SET utf8mb4 COLLATE ', target)
            FROM information_schema.COLUMNS
            WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = tbl
              AND DATA_TYPE IN ('char', 'varchar') AND FIND_IN_SET(COLLATION_NAME, from_collations) > 0);
        IF @backbone_ddl IS NULL THEN
            SET @backbone_ddl = CONCAT('ALTER TABLE `', tbl, '` DEFAULT CHARACTER SET utf8mb4 COLLATE ', target);
        END IF;
        PREPARE backbone_stmt FROM @backbone_ddl;
        EXECUTE backbone_stmt;
        DEALLOCATE PREPARE backbone_stmt;
    END LOOP;
    SET @backbone_ddl = NULL;
END;
-- +goose StatementEnd

CALL backbone_recollate(@backbone_collation, 'utf8mb4_bin');
DROP PROCEDURE backbone_recollate;

-- +goose Down
-- +goose StatementBegin
CREATE PROCEDURE backbone_recollate(IN target VARCHAR(64), IN from_collations VARCHAR(255))
BEGIN
    DECLARE tbl VARCHAR(64);
    DECLARE i INT DEFAULT 0;
    DECLARE mariadb BOOLEAN DEFAULT VERSION() LIKE '%MariaDB%';
    loop_tables: LOOP
        SET i = i + 1;
        IF i > 3 THEN
            LEAVE loop_tables;
        END IF;
        SET tbl = ELT(i, 'events', 'event_audit_log', 'dead_letters');
        SET @backbone_ddl = (
            SELECT CONCAT('ALTER TABLE `', tbl, '` ',
                GROUP_CONCAT(CONCAT('MODIFY `', COLUMN_NAME, '` ', COLUMN_TYPE,
                    ' CHARACTER SET utf8mb4 COLLATE ', target,
                    IF(IS_NULLABLE = 'NO', ' NOT NULL', ' NULL'),
                    CASE
                        WHEN COLUMN_DEFAULT IS NULL OR (mariadb AND COLUMN_DEFAULT = 'NULL') THEN ''
                        WHEN mariadb THEN CONCAT(' DEFAULT ', COLUMN_DEFAULT)
                        ELSE CONCAT(' DEFAULT ', QUOTE(COLUMN_DEFAULT))
                    END)
                    ORDER BY ORDINAL_POSITION SEPARATOR ', '),
                ', DEFAULT CHARACTER SET utf8mb4 COLLATE ', target)
            FROM information_schema.COLUMNS
            WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = tbl
              AND DATA_TYPE IN ('char', 'varchar') AND FIND_IN_SET(COLLATION_NAME, from_collations) > 0);
        IF @backbone_ddl IS NULL THEN
            SET @backbone_ddl = CONCAT('ALTER TABLE `', tbl, '` DEFAULT CHARACTER SET utf8mb4 COLLATE ', target);
        END IF;
        PREPARE backbone_stmt FROM @backbone_ddl;
        EXECUTE backbone_stmt;
        DEALLOCATE PREPARE backbone_stmt;
    END LOOP;
    SET @backbone_ddl = NULL;
END;
-- +goose StatementEnd

CALL backbone_recollate('utf8mb4_bin', 'utf8mb4_0900_bin,utf8mb4_nopad_bin');
DROP PROCEDURE backbone_recollate;
