-- The per-record projection (SPEC §4): one narrow row per record holding its
-- head, the newest version and event, and the folded state S. The merge
-- locks it by primary key and updates it in the same transaction as the
-- insert, and the sinks read a record's state from it, so a merge and a
-- delivery cost the same whatever the record's history. It replaces the copy
-- of the whole state in every accepted audit row (storage grew with events x
-- fields; it now grows with the changes stored).
--
-- It is the only mutable table besides events.processed: derived from
-- `events` and the audit log, rebuilt by `backbone rebuild`, and sync_worker
-- may SELECT, INSERT and UPDATE it (never DELETE). It has no append-only
-- triggers, by design.
--
-- Identity columns use the NO PAD binary collation of 00004, picked per
-- server (utf8mb4_0900_bin on MySQL 8, utf8mb4_nopad_bin on MariaDB).

-- +goose Up
SET @backbone_collation = (
    SELECT COLLATION_NAME FROM information_schema.COLLATIONS
    WHERE COLLATION_NAME IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin')
    ORDER BY COLLATION_NAME = 'utf8mb4_0900_bin' DESC LIMIT 1);

SET @backbone_ddl = CONCAT(
    'CREATE TABLE record_heads (',
    ' record_type VARCHAR(64)     NOT NULL,',
    ' record_id   VARCHAR(191)    NOT NULL,',
    ' version     BIGINT UNSIGNED NOT NULL,',
    ' event_id    CHAR(36)        NOT NULL,',
    ' state       MEDIUMBLOB      NOT NULL,',
    ' updated_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),',
    ' PRIMARY KEY (record_type, record_id)',
    ') ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=', @backbone_collation);
PREPARE backbone_stmt FROM @backbone_ddl;
EXECUTE backbone_stmt;
DEALLOCATE PREPARE backbone_stmt;
SET @backbone_ddl = NULL;

-- Existing records: their head, with the state the newest accepted audit row
-- kept (empty where none was: the merge rebuilds it from the events).
INSERT INTO record_heads (record_type, record_id, version, event_id, state)
SELECT e.record_type, e.record_id, e.base_version + 1, e.id, COALESCE(
    (SELECT a.state FROM event_audit_log a
     WHERE a.event_id = e.id AND a.processing_outcome IN ('accepted', 'merged') AND a.state IS NOT NULL
     LIMIT 1), '')
FROM events e
JOIN (SELECT record_type, record_id, MAX(base_version) AS b FROM events GROUP BY record_type, record_id) m
  ON m.record_type = e.record_type AND m.record_id = e.record_id AND m.b = e.base_version;

-- +goose Down
DROP TABLE IF EXISTS record_heads;
