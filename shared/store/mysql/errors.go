package mysql

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/backbone-sync/backbone/shared/store"
)

// MySQL and MariaDB server error numbers the store names in code.
const (
	errDupEntry        = 1062
	errLockWaitTimeout = 1205
	errDeadlock        = 1213
	errPacketTooLarge  = 1153
	errUnknown         = 1105 // ER_UNKNOWN_ERROR: classified by its message where it must be
)

// serverError is one row of the classification table.
type serverError struct {
	class store.Class
	name  string // stable snake_case; a refusal's reason is store_refused_<name>
}

// serverErrors is THE table of server error numbers, transient versus
// permanent (SPEC §6), for MySQL 8 and MariaDB 10.11 (the numbers below 3000
// are shared; 19xx and 4xxx are MariaDB's, 3xxx MySQL's). Every stage reads
// it through wrap, so a number is classified once. A number not listed is
// store.ErrUnclassified: retried by default, and said so.
//
// Transient: the database, not the message, is at fault, and the same
// statement succeeds later (after a failover, a restart, a fixed grant).
// Refused: the server refused the statement for what it carries; retrying
// the same message can never succeed.
var serverErrors = map[int]serverError{
	// Connections: too many, refused, lost, killed, shutting down.
	1040: {store.ClassTransient, "too_many_connections"},
	1203: {store.ClassTransient, "too_many_user_connections"},
	1226: {store.ClassTransient, "user_limit_reached"}, // max_user_connections and other per-user limits
	1043: {store.ClassTransient, "bad_handshake"},
	1053: {store.ClassTransient, "server_shutdown"},
	1077: {store.ClassTransient, "normal_shutdown"},
	1152: {store.ClassTransient, "aborting_connection"},
	1158: {store.ClassTransient, "net_read_error"},
	1159: {store.ClassTransient, "net_read_interrupted"},
	1160: {store.ClassTransient, "net_error_on_write"},
	1161: {store.ClassTransient, "net_write_interrupted"},
	1129: {store.ClassTransient, "host_is_blocked"},
	1927: {store.ClassTransient, "connection_killed"},
	4031: {store.ClassTransient, "client_interaction_timeout"},
	// Client-side numbers (CR_*): the Go driver reports these conditions as
	// network errors, but a proxy may relay them as server errors.
	2002: {store.ClassTransient, "connection_error"},
	2003: {store.ClassTransient, "conn_host_error"},
	2006: {store.ClassTransient, "server_gone"},
	2013: {store.ClassTransient, "server_lost"},
	2055: {store.ClassTransient, "server_lost_extended"},
	// Access: a grant or password out of step with the deployment (IAM token
	// expiry, a grant not yet applied). The message is not at fault.
	1044: {store.ClassTransient, "db_access_denied"},
	1045: {store.ClassTransient, "access_denied"},
	1142: {store.ClassTransient, "table_access_denied"},
	1143: {store.ClassTransient, "column_access_denied"},
	1227: {store.ClassTransient, "specific_access_denied"},
	// Read-only server during a failover.
	1290: {store.ClassTransient, "read_only"},
	1836: {store.ClassTransient, "read_only_mode"},
	1792: {store.ClassTransient, "read_only_transaction"},
	// Concurrency: retried with jitter (InTx) and then upstream.
	errDeadlock:        {store.ClassTransient, "deadlock"},
	errLockWaitTimeout: {store.ClassTransient, "lock_wait_timeout"},
	1637:               {store.ClassTransient, "too_many_concurrent_transactions"},
	1180:               {store.ClassTransient, "error_during_commit"},
	1181:               {store.ClassTransient, "error_during_rollback"},
	1317:               {store.ClassTransient, "query_interrupted"},
	1969:               {store.ClassTransient, "statement_timeout"},
	3024:               {store.ClassTransient, "query_timeout"},
	// Server resources: an operator frees them.
	1021: {store.ClassTransient, "disk_full"},
	1037: {store.ClassTransient, "out_of_memory"},
	1038: {store.ClassTransient, "out_of_sort_memory"},
	1041: {store.ClassTransient, "out_of_resources"},
	1114: {store.ClassTransient, "table_full"},
	1135: {store.ClassTransient, "cant_create_thread"},
	// Schema not in step with the code (a migration not applied yet): the
	// deployment is at fault; the message goes through once it is fixed.
	1054: {store.ClassTransient, "unknown_column"},
	1146: {store.ClassTransient, "no_such_table"},

	// Refused for the statement's content.
	1406:        {store.ClassRefused, "data_too_long"},
	1265:        {store.ClassRefused, "data_truncated"},
	1264:        {store.ClassRefused, "out_of_range"},
	1292:        {store.ClassRefused, "incorrect_value"},
	1366:        {store.ClassRefused, "incorrect_string_value"},
	1367:        {store.ClassRefused, "illegal_value"},
	1048:        {store.ClassRefused, "null_not_allowed"},
	1118:        {store.ClassRefused, "row_too_large"},
	1153:        {store.ClassRefused, "packet_too_large"},
	1301:        {store.ClassRefused, "packet_too_large"},
	1253:        {store.ClassRefused, "illegal_mix_of_collations"},
	1267:        {store.ClassRefused, "illegal_mix_of_collations"},
	1270:        {store.ClassRefused, "illegal_mix_of_collations"},
	1271:        {store.ClassRefused, "illegal_mix_of_collations"},
	errDupEntry: {store.ClassRefused, "duplicate_entry"},
	1644:        {store.ClassRefused, "append_only"}, // SIGNAL in the append-only triggers
	4025:        {store.ClassRefused, "json_constraint"},
	3819:        {store.ClassRefused, "json_constraint"}, // MySQL's CHECK constraint violated
	3140:        {store.ClassRefused, "invalid_json"},
	3141:        {store.ClassRefused, "invalid_json"},
	3144:        {store.ClassRefused, "invalid_json_charset"},
	3146:        {store.ClassRefused, "invalid_json_type"},
	3150:        {store.ClassRefused, "json_value_too_big"},
	3151:        {store.ClassRefused, "json_key_too_big"},
	3155:        {store.ClassRefused, "json_number_out_of_range"},
	3157:        {store.ClassRefused, "json_too_deep"},
	4038:        {store.ClassRefused, "json_too_deep"}, // MariaDB ER_JSON_DEPTH
}

// classOf looks a server error number up in the table.
func classOf(number int) (serverError, bool) {
	se, ok := serverErrors[number]
	return se, ok
}

// retryable reports whether InTx runs the transaction again at once:
// deadlocks, lock-wait timeouts and lost version races. Other transient
// errors are retried upstream, with Pub/Sub's backoff.
func retryable(err error) bool {
	if errors.Is(err, store.ErrVersionTaken) {
		return true
	}
	me, ok := serverAnswer(err)
	return ok && (me.Number == errDeadlock || me.Number == errLockWaitTimeout)
}

// serverAnswer finds the server's error answer in err's chain: what the
// table classifies. ok is false for everything else (network, driver,
// context).
func serverAnswer(err error) (me *mysql.MySQLError, ok bool) {
	ok = errors.As(err, &me)
	return me, ok
}

// wrap adds context and classifies err with the table: transient server
// errors and everything that is not a server error (network, driver,
// context) wrap store.ErrUnavailable; refusals become a *store.RefusedError;
// a number the table does not know wraps store.ErrUnclassified. The server
// error stays in the chain (errors.As *mysql.MySQLError still works).
func wrap(err error, what string) error {
	tooLarge, _ := classOf(errPacketTooLarge)
	if errors.Is(err, mysql.ErrPktTooLarge) {
		// The driver refuses, before sending, a packet over the server's
		// max_allowed_packet: the server would have answered 1153.
		return fmt.Errorf("%s: %w", what, &store.RefusedError{Number: errPacketTooLarge, Name: tooLarge.name, Err: err})
	}
	me, ok := serverAnswer(err)
	if !ok {
		return fmt.Errorf("%s: %w: %w", what, store.ErrUnavailable, err)
	}
	se, ok := classOf(int(me.Number))
	if me.Number == errUnknown && strings.Contains(me.Message, "max_allowed_packet") {
		// A parameter too large even for a prepared statement's long data
		// (the driver's fallback once interpolation would overflow the
		// packet): the server names no number of its own for it.
		se, ok = tooLarge, true
	}
	switch {
	case !ok:
		return fmt.Errorf("%s: %w: error %d: %w", what, store.ErrUnclassified, me.Number, err)
	case se.class == store.ClassRefused:
		return fmt.Errorf("%s: %w", what, &store.RefusedError{Number: int(me.Number), Name: se.name, Err: err})
	default:
		return fmt.Errorf("%s: %w (%s): %w", what, store.ErrUnavailable, se.name, err)
	}
}

// Classify wraps an error of a statement run outside the store (tools that
// measure raw SQL, tests) with the same classification as the store's own.
func Classify(err error, what string) error {
	if err == nil {
		return nil
	}
	return wrap(err, what)
}
