// Package mysql is the event store driver for MySQL 8 (Cloud SQL) and
// MariaDB 10.11 (development). Its SQL stays in the subset both run.
package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"time"

	"cloud.google.com/go/cloudsqlconn"
	"github.com/go-sql-driver/mysql"

	"github.com/backbone-sync/backbone/shared/config"
)

// Open connects to the event store described by c: EVENT_STORE_DSN as is, or
// Cloud SQL through cloudsqlconn (IAM auth, private IP, lazy refresh) when
// CLOUD_SQL_INSTANCE is set. Either way the session runs in UTC with utf8mb4
// and parseTime, and the pool suits Cloud Run. closeAll closes the pool and
// the Cloud SQL dialer, if any.
func Open(ctx context.Context, c config.DB) (db *sql.DB, closeAll func() error, err error) {
	var (
		mc      *mysql.Config
		cleanup = func() error { return nil }
	)
	switch {
	case c.DSN != "":
		mc, err = mysql.ParseDSN(c.DSN)
		if err != nil {
			return nil, nil, fmt.Errorf("EVENT_STORE_DSN is not a valid go-sql-driver DSN: %w", err)
		}
	case c.CloudSQLInstance != "":
		opts := []cloudsqlconn.Option{cloudsqlconn.WithLazyRefresh()}
		if c.IAMAuth {
			opts = append(opts, cloudsqlconn.WithIAMAuthN())
		}
		d, err := cloudsqlconn.NewDialer(ctx, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("cloud sql dialer for %s: %w", c.CloudSQLInstance, err)
		}
		cleanup = d.Close
		var dialOpts []cloudsqlconn.DialOption
		if c.PrivateIP {
			dialOpts = append(dialOpts, cloudsqlconn.WithPrivateIP())
		}
		instance := c.CloudSQLInstance
		mc = cloudSQLConfig(c, func(ctx context.Context) (net.Conn, error) {
			return d.Dial(ctx, instance, dialOpts...)
		})
	default:
		return nil, nil, fmt.Errorf("no event store configured: set EVENT_STORE_DSN or CLOUD_SQL_INSTANCE")
	}
	normalise(mc)
	conn, err := mysql.NewConnector(mc)
	if err != nil {
		_ = cleanup()
		return nil, nil, fmt.Errorf("event store connector: %w", err)
	}
	db = sql.OpenDB(readCommitted{conn})
	maxOpen := c.MaxOpenConns
	if maxOpen <= 0 {
		maxOpen = 8
	}
	// Cloud Run scales out instances, each with its own pool; a small pool
	// per instance keeps the sum under Cloud SQL's max_connections, and a
	// bounded lifetime lets connections follow failovers and IAM token expiry.
	db.SetMaxOpenConns(maxOpen)
	db.SetMaxIdleConns(maxOpen)
	db.SetConnMaxLifetime(30 * time.Minute)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, func() error { return errors.Join(db.Close(), cleanup()) }, nil
}

// cloudSQLConfig is the driver configuration of a Cloud SQL connection made
// by dial (the connector's TLS tunnel).
//
// IAM database authentication needs nothing from the driver: with
// WithIAMAuthN the connector puts the account's OAuth2 token into the
// ephemeral client certificate it requests (Cloud SQL's automatic IAM
// authentication), and the server logs the user in from that certificate.
// No token travels as a password, so cleartext passwords stay refused.
//
// Pooled connections are not liveness-checked before use, and that is
// deliberate. The driver's check is a non-blocking read on the raw socket
// (CheckConnLiveness, through syscall.Conn), which the connector's
// connection does not expose: it is a TLS conn inside an instrumented
// wrapper, so the driver skips the check. The alternative, a ping on every
// checkout, adds a round trip to every statement of the merge path. What a
// check would catch (a connection cut by a failover or maintenance) fails
// one statement: database/sql discards the broken connection, the store's
// caller returns the error, the message is nacked and Pub/Sub redelivers it
// (SPEC §6), so nothing is lost. SetConnMaxIdleTime (5 minutes) and
// SetConnMaxLifetime (30 minutes) in Open keep such connections rare, far
// below MySQL's wait_timeout (8 hours by default).
func cloudSQLConfig(c config.DB, dial func(context.Context) (net.Conn, error)) *mysql.Config {
	mc := mysql.NewConfig()
	mc.User = c.User
	mc.Passwd = c.Password
	mc.DBName = c.Name
	mc.Net = "cloudsql"
	mc.Addr = c.CloudSQLInstance
	mc.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dial(ctx)
	}
	return mc
}

// readCommitted sets READ COMMITTED once per connection, when it is opened,
// so that single statements outside the store's transactions (the outbox
// flag, tools) avoid REPEATABLE READ's gap locks too (SPEC §5), and so that
// the store's transactions need not ask for it each time. A pool opened
// another way is not marked (sessionRC) and its transactions ask
// explicitly. The statement is standard SQL on MySQL 8 and MariaDB; the
// variable's name differs between them (transaction_isolation,
// tx_isolation), so it cannot go in the DSN.
type readCommitted struct{ driver.Connector }

// Driver marks the pool as one whose every session is READ COMMITTED, so
// the store (New) can begin transactions at the session's level and save
// the SET TRANSACTION statement the driver sends before each one otherwise.
func (c readCommitted) Driver() driver.Driver { return sessionRC{c.Connector.Driver()} }

// sessionRC is the driver of a pool opened by Open (readCommitted).
type sessionRC struct{ driver.Driver }

func (c readCommitted) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("mysql driver connection cannot execute statements")
	}
	if _, err := ex.ExecContext(ctx, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", nil); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("set READ COMMITTED: %w", err)
	}
	return conn, nil
}

// normalise forces the session settings the store relies on, whatever the
// DSN says: UTC (DATETIME(6) is not zone-converted, so every session must
// agree), utf8mb4 with a binary collation, parseTime, and client-side
// interpolation (one round trip per statement instead of prepare/exec/close;
// safe with utf8mb4).
func normalise(mc *mysql.Config) {
	mc.ParseTime = true
	mc.Loc = time.UTC
	mc.Collation = "utf8mb4_bin"
	mc.InterpolateParams = true
	mc.MultiStatements = false
	// Read max_allowed_packet from the server at connect: a statement over
	// it is then refused by the driver (ErrPktTooLarge, classified as the
	// refusal it is) instead of the server cutting the connection mid-write,
	// which would look like a lost connection and be retried forever.
	mc.MaxAllowedPacket = 0
	if mc.Params == nil {
		mc.Params = map[string]string{}
	}
	mc.Params["time_zone"] = "'+00:00'"
	if mc.Timeout == 0 {
		mc.Timeout = 10 * time.Second
	}
	if mc.ReadTimeout == 0 {
		mc.ReadTimeout = 30 * time.Second
	}
	if mc.WriteTimeout == 0 {
		mc.WriteTimeout = 30 * time.Second
	}
}

// DSN returns the normalised form of a go-sql-driver DSN, for tools that open
// their own connections (migrations, tests).
func DSN(dsn string) (string, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	normalise(mc)
	return mc.FormatDSN(), nil
}
