-- dead_letters is keyed on (message_id, content_digest), not message_id alone
-- (SPEC §6: the archive never loops and never drops).
--
-- Why: a Pub/Sub message id is unique only within one topic of one server
-- history. An emulator that restarts numbers its messages from m0 again, and
-- a store restored from a backup may meet ids it already holds; keyed on the
-- id alone, such a new dead letter collided with an archived one and was
-- either refused on every delivery (looping, blocking its ordering key) or
-- taken for a redelivery and dropped. A redelivery of one Pub/Sub message
-- carries the same bytes every time, so "same id and same data" is exactly a
-- redelivery (idempotent, no second row) and anything else is a new dead
-- letter (stored). The data is the whole error message: stage, reason,
-- detail and the original message with its id, data, attributes and publish
-- time, so two different failures never share it. Attributes are left out
-- on purpose: the CloudPubSubDeadLetterSource* ones describe the forwarding,
-- not the message, and differ between copies in the development stack.
--
-- content_digest is the lowercase hex SHA-256 of data. The CHECK makes the
-- database hold the writer to it, so the key cannot disagree with the bytes.
-- (A generated column would be simpler, but MariaDB refuses a primary key on
-- one, error 1903.) Existing rows get their digest from a stored generated
-- column that is then turned into a plain one: no UPDATE runs, so the
-- append-only triggers of 00002 stay in place throughout.

-- +goose Up
ALTER TABLE dead_letters ADD COLUMN content_digest CHAR(64) AS (SHA2(data, 256)) STORED;
ALTER TABLE dead_letters MODIFY content_digest CHAR(64) NOT NULL;
ALTER TABLE dead_letters
    ADD CONSTRAINT dead_letters_content_digest CHECK (content_digest = SHA2(data, 256)),
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (message_id, content_digest);

-- +goose Down
-- Refused by the server (duplicate key) while two dead letters share a
-- message id: going back to one row per id would have to drop one of them.
ALTER TABLE dead_letters
    DROP CONSTRAINT dead_letters_content_digest,
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (message_id);
ALTER TABLE dead_letters DROP COLUMN content_digest;
