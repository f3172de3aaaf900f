-- The V10 event store (SPEC §4).
--
-- Every table is InnoDB utf8mb4 with a binary collation, so identifiers compare
-- byte for byte ('C-1' and 'c-1' are two records) and 4-byte UTF-8 survives.
-- Timestamps are DATETIME(6): microseconds without the 2038 limit and without
-- session time-zone conversion (sessions run in UTC).
--
-- MariaDB note: JSON is an alias of LONGTEXT with a json_valid() CHECK there,
-- so information_schema reports DATA_TYPE 'longtext' for JSON columns on
-- MariaDB and 'json' on MySQL 8. MySQL 8 also normalises stored JSON (key
-- order, whitespace); MariaDB keeps the bytes as written.

-- +goose Up

-- DESTRUCTIVE ONE-WAY STEP: the legacy Epic 2 `event_store` table (dual key,
-- wrong column names) never held production data and is not V10. It is dropped
-- here and the down migration does NOT recreate it.
DROP TABLE IF EXISTS event_store;

CREATE TABLE events (
    id                CHAR(36)        NOT NULL,
    record_type       VARCHAR(64)     NOT NULL,
    record_id         VARCHAR(191)    NOT NULL,
    source            VARCHAR(64)     NOT NULL,
    `timestamp`       DATETIME(6)     NOT NULL,
    base_version      BIGINT UNSIGNED NOT NULL,
    changes           JSON            NOT NULL,
    full_snapshot_ref VARCHAR(1024)   NULL,
    processed         TINYINT         NOT NULL DEFAULT 0,
    created_at        DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    -- One event per record version: the optimistic-concurrency guard.
    UNIQUE KEY idx_events_aggregate (record_type, record_id, base_version),
    KEY idx_events_unprocessed (processed, created_at),
    KEY idx_events_source_time (source, `timestamp`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- event_id is indexed but deliberately has no FOREIGN KEY: the event and its
-- audit row are written in one transaction, and a FK would serialise parallel
-- inserts. Extra columns beyond V10: stage, message_id, version, detail and
-- state (the folded record state after an accepted event, so a merge reads the
-- current state in one index probe whatever the history length; it is derived
-- from `events` and can be rebuilt from it). state is opaque bytes to the
-- database (the merge engine owns its JSON format): a JSON column would be
-- validated (MariaDB) or converted to binary JSON (MySQL) on every insert,
-- which measurably costs on the merge path.
CREATE TABLE event_audit_log (
    id                 CHAR(36)        NOT NULL,
    event_id           CHAR(36)        NULL,
    fingerprint        CHAR(64)        NOT NULL,
    record_type        VARCHAR(64)     NOT NULL,
    record_id          VARCHAR(191)    NOT NULL,
    processing_outcome VARCHAR(32)     NULL,
    created_at         DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    stage              VARCHAR(32)     NULL,
    message_id         VARCHAR(255)    NULL,
    version            BIGINT UNSIGNED NULL,
    detail             TEXT            NULL,
    state              MEDIUMBLOB      NULL,
    PRIMARY KEY (id),
    KEY idx_audit_fingerprint (fingerprint),
    KEY idx_audit_record (record_type, record_id, version),
    KEY idx_audit_event (event_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per Pub/Sub message id: DLQArchive inserts are idempotent.
CREATE TABLE dead_letters (
    message_id        VARCHAR(255)    NOT NULL,
    subscription      VARCHAR(255)    NOT NULL,
    delivery_attempts INT             NOT NULL DEFAULT 0,
    stage             VARCHAR(32)     NOT NULL,
    reason            VARCHAR(128)    NOT NULL,
    detail            TEXT            NULL,
    event_id          CHAR(36)        NULL,
    record_type       VARCHAR(64)     NULL,
    record_id         VARCHAR(191)    NULL,
    data              LONGBLOB        NOT NULL,
    attributes        JSON            NOT NULL,
    publish_time      DATETIME(6)     NULL,
    created_at        DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (message_id),
    KEY idx_dead_letters_stage_reason (stage, reason, created_at),
    KEY idx_dead_letters_record (record_type, record_id),
    KEY idx_dead_letters_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
-- DESTRUCTIVE ONE-WAY MIGRATION: the legacy `event_store` table dropped by the
-- up step is NOT recreated. It was never V10-compliant and held no production
-- data; recreating it would restore a deliberately deprecated schema.
DROP TABLE IF EXISTS dead_letters;
DROP TABLE IF EXISTS event_audit_log;
DROP TABLE IF EXISTS events;
