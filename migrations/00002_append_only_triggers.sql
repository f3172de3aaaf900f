-- Append-only is enforced by the database, not only by the Go code (SPEC §4).
-- The only UPDATE ever allowed is events.processed going 0 -> 1 with every
-- other column unchanged (the outbox flag). SIGNAL SQLSTATE '45000' is the
-- portable way (MySQL 8 and MariaDB) to refuse a row change in a trigger.
--
-- On Cloud SQL with binary logging (production PITR) creating triggers needs
-- log_bin_trust_function_creators=on; the deploy scripts set that flag.

-- +goose Up
-- +goose StatementBegin
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
FOR EACH ROW
BEGIN
    IF NOT (OLD.processed = 0 AND NEW.processed = 1
        AND NEW.id <=> OLD.id
        AND NEW.record_type <=> OLD.record_type
        AND NEW.record_id <=> OLD.record_id
        AND NEW.source <=> OLD.source
        AND NEW.`timestamp` <=> OLD.`timestamp`
        AND NEW.base_version <=> OLD.base_version
        AND NEW.changes <=> OLD.changes
        AND NEW.full_snapshot_ref <=> OLD.full_snapshot_ref
        AND NEW.created_at <=> OLD.created_at) THEN
        SIGNAL SQLSTATE '45000'
            SET MESSAGE_TEXT = 'events is append-only: only processed 0->1 may change';
    END IF;
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
FOR EACH ROW
BEGIN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'events is append-only: DELETE refused';
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER event_audit_log_append_only_update BEFORE UPDATE ON event_audit_log
FOR EACH ROW
BEGIN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'event_audit_log is append-only: UPDATE refused';
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER event_audit_log_append_only_delete BEFORE DELETE ON event_audit_log
FOR EACH ROW
BEGIN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'event_audit_log is append-only: DELETE refused';
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER dead_letters_append_only_update BEFORE UPDATE ON dead_letters
FOR EACH ROW
BEGIN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'dead_letters is append-only: UPDATE refused';
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER dead_letters_append_only_delete BEFORE DELETE ON dead_letters
FOR EACH ROW
BEGIN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'dead_letters is append-only: DELETE refused';
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER IF EXISTS dead_letters_append_only_delete;
DROP TRIGGER IF EXISTS dead_letters_append_only_update;
DROP TRIGGER IF EXISTS event_audit_log_append_only_delete;
DROP TRIGGER IF EXISTS event_audit_log_append_only_update;
DROP TRIGGER IF EXISTS events_append_only_delete;
DROP TRIGGER IF EXISTS events_append_only_update;
