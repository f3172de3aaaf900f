-- Delivery by known state (SPEC §7). Every merge row of a report records
-- which system reported it (source) and the digests of every field it
-- carried, dropped or not; every delivery attempt writes a `sending` row
-- just before its request and an outcome row after it, both with the
-- digests of the fields sent (fields). A sink computes what a target is
-- missing from these rows and the record's folded state; the merge's echo
-- rule reads the same rows. Digests, not values: a row stays bounded
-- whatever the size of the values (the event itself holds them).
--
-- fields is opaque bytes (JSON written by the Go code) for the same reason
-- as state: no JSON validation or conversion on the hot insert path.

-- +goose Up
ALTER TABLE event_audit_log
    ADD COLUMN source VARCHAR(64) NULL,
    ADD COLUMN fields MEDIUMBLOB NULL;

-- +goose Down
ALTER TABLE event_audit_log
    DROP COLUMN fields,
    DROP COLUMN source;
