package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
	"github.com/backbone-sync/backbone/shared/store/storetest"
)

// wantClass checks err's class and, for a refusal, its reason.
func wantClass(t *testing.T, name string, err error, class store.Class, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", name)
	}
	if got := store.Classify(err); got != class {
		t.Errorf("%s: class %s, want %s: %v", name, got, class, err)
	}
	if reason != "" {
		re, ok := store.AsRefused(err)
		if !ok || re.Reason() != reason {
			t.Errorf("%s: refusal %+v, want reason %s: %v", name, re, reason, err)
		}
	}
}

// TestErrorClassesFromTheServer: each class of the table, produced by the
// real server (or a connection the test cuts), comes out of the store
// classified as SPEC §6 says.
func TestErrorClassesFromTheServer(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	ctx := context.Background()

	t.Run("data too long", func(t *testing.T) {
		_, err := d.Store.AppendDeadLetter(ctx, store.DeadLetter{MessageID: "m", Subscription: "s", Stage: "merge",
			Reason: strings.Repeat("r", 129), Data: []byte("{}")})
		wantClass(t, "reason over VARCHAR(128)", err, store.ClassRefused, "store_refused_data_too_long")
	})
	t.Run("json constraint", func(t *testing.T) {
		e := storetest.NewEvent("customer", "J-1", 0, `{"a":`)
		err := d.Store.AppendEvent(ctx, e, auditFor(e))
		wantClass(t, "changes not JSON", err, store.ClassRefused, "")
		if re, ok := store.AsRefused(err); !ok || (re.Name != "json_constraint" && re.Name != "invalid_json") {
			t.Errorf("refusal %+v: want json_constraint (MariaDB 4025) or invalid_json (MySQL 3140)", re)
		}
	})
	t.Run("packet too large", func(t *testing.T) {
		var maxPacket int
		if err := d.Root.QueryRow("SELECT @@max_allowed_packet").Scan(&maxPacket); err != nil {
			t.Fatal(err)
		}
		_, err := d.Store.AppendDeadLetter(ctx, store.DeadLetter{MessageID: "big", Subscription: "s", Stage: "merge", Reason: "r",
			Data: make([]byte, maxPacket+1)})
		wantClass(t, "insert over max_allowed_packet", err, store.ClassRefused, "store_refused_packet_too_large")
	})
	t.Run("illegal mix of collations", func(t *testing.T) {
		conn, err := d.Root.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "CREATE TEMPORARY TABLE padded (record_id VARCHAR(191) COLLATE utf8mb4_bin)"); err != nil {
			t.Fatal(err)
		}
		_, err = conn.ExecContext(ctx, "SELECT COUNT(*) FROM events e JOIN padded p ON p.record_id = e.record_id")
		wantClass(t, "PAD SPACE against NO PAD", mysql.Classify(err, "join"), store.ClassRefused, "store_refused_illegal_mix_of_collations")
	})
	t.Run("incorrect string value", func(t *testing.T) {
		_, err := d.Root.ExecContext(ctx, "INSERT INTO event_audit_log (id, fingerprint, record_type, record_id) VALUES ('bad', 'f', 't', ?)", "bad-\xff")
		wantClass(t, "invalid UTF-8 in a utf8mb4 column", mysql.Classify(err, "insert"), store.ClassRefused, "store_refused_incorrect_string_value")
	})
	t.Run("lock wait timeout", func(t *testing.T) {
		e := storetest.NewEvent("customer", "L-1", 0, `{"a":1}`)
		if err := d.Store.AppendEvent(ctx, e, auditFor(e)); err != nil {
			t.Fatal(err)
		}
		holder, err := d.Root.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Rollback()
		if _, err := holder.ExecContext(ctx, "SELECT id FROM events WHERE id = ? FOR UPDATE", e.ID); err != nil {
			t.Fatal(err)
		}
		conn, err := d.Root.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 1"); err != nil {
			t.Fatal(err)
		}
		_, err = conn.ExecContext(ctx, "SELECT id FROM events WHERE id = ? FOR UPDATE", e.ID)
		wantClass(t, "lock wait", mysql.Classify(err, "lock"), store.ClassTransient, "")
		if !errors.Is(mysql.Classify(err, "lock"), store.ErrUnavailable) {
			t.Errorf("lock wait timeout %v: want ErrUnavailable", err)
		}
	})
	t.Run("deadlock", func(t *testing.T) {
		a := storetest.NewEvent("customer", "D-1", 0, `{"a":1}`)
		b := storetest.NewEvent("customer", "D-2", 0, `{"a":1}`)
		for _, e := range []store.Event{a, b} {
			if err := d.Store.AppendEvent(ctx, e, auditFor(e)); err != nil {
				t.Fatal(err)
			}
		}
		t1, _ := d.Root.BeginTx(ctx, nil)
		t2, _ := d.Root.BeginTx(ctx, nil)
		defer t1.Rollback()
		defer t2.Rollback()
		lock := func(tx *sql.Tx, id string) error {
			_, err := tx.ExecContext(ctx, "SELECT id FROM events WHERE id = ? FOR UPDATE", id)
			return err
		}
		if err := lock(t1, a.ID); err != nil {
			t.Fatal(err)
		}
		if err := lock(t2, b.ID); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 2)
		go func() { errs <- lock(t1, b.ID) }()
		time.Sleep(200 * time.Millisecond)
		go func() { errs <- lock(t2, a.ID) }()
		err := <-errs
		if err == nil {
			err = <-errs
		}
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1213 {
			t.Fatalf("want a deadlock (1213), got %v", err)
		}
		wantClass(t, "deadlock", mysql.Classify(err, "lock"), store.ClassTransient, "")
	})
	t.Run("read-only transaction", func(t *testing.T) {
		tx, err := d.Root.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		_, err = tx.ExecContext(ctx, "INSERT INTO event_audit_log (id, fingerprint, record_type, record_id) VALUES ('ro', 'f', 't', 'r')")
		wantClass(t, "write in a read-only transaction", mysql.Classify(err, "insert"), store.ClassTransient, "")
	})
	t.Run("too many connections", func(t *testing.T) {
		user := fmt.Sprintf("bbc_%d", time.Now().UnixNano()%1e9)
		if _, err := d.Root.ExecContext(ctx, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'pw' WITH MAX_USER_CONNECTIONS 1", user)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = d.Root.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user)) })
		cfg, _ := mysql.ParseDSN(d.DSN)
		cfg.User, cfg.Passwd, cfg.DBName = user, "pw", ""
		db, closeFn, err := mysql.Open(ctx, config.DB{DSN: cfg.FormatDSN()})
		if err != nil {
			t.Fatal(err)
		}
		s := mysql.New(db, closeFn)
		defer s.Close()
		c1, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c1.Close()
		err = s.Ping(ctx)
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1226 {
			t.Errorf("second connection: %v, want 1226 (max_user_connections)", err)
		}
		wantClass(t, "too many connections", err, store.ClassTransient, "")
	})
	t.Run("connection refused", func(t *testing.T) {
		db, closeFn, err := mysql.Open(ctx, config.DB{DSN: "root@tcp(127.0.0.1:1)/x?timeout=2s"})
		if err != nil {
			t.Fatal(err)
		}
		s := mysql.New(db, closeFn)
		defer s.Close()
		_, err = s.Head(ctx, "customer", "C-1")
		wantClass(t, "refused", err, store.ClassTransient, "")
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("refused connection %v: want ErrUnavailable", err)
		}
	})
	t.Run("connection cut", func(t *testing.T) {
		cfg, _ := mysql.ParseDSN(d.DSN)
		p := startCutProxy(t, cfg.Addr)
		cfg.Addr = p.addr()
		db, closeFn, err := mysql.Open(ctx, config.DB{DSN: cfg.FormatDSN()})
		if err != nil {
			t.Fatal(err)
		}
		s := mysql.New(db, closeFn)
		defer s.Close()
		if _, err := s.Head(ctx, "customer", "C-1"); err != nil {
			t.Fatalf("through the proxy: %v", err)
		}
		err = s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			if _, _, err := tx.LockRecord(ctx, "customer", "C-1", store.Probe{}); err != nil {
				return err
			}
			p.cut()
			_, err := tx.Head(ctx, "customer", "C-1")
			return err
		})
		wantClass(t, "cut mid-transaction", err, store.ClassTransient, "")
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("cut connection %v: want ErrUnavailable", err)
		}
	})
	t.Run("unknown error number", func(t *testing.T) {
		if _, err := d.Root.ExecContext(ctx, "CREATE PROCEDURE odd() SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 31999, MESSAGE_TEXT = 'an error number no table knows'"); err != nil {
			t.Fatal(err)
		}
		_, err := d.Root.ExecContext(ctx, "CALL odd()")
		err = mysql.Classify(err, "call")
		wantClass(t, "unknown number", err, store.ClassUnclassified, "")
		if !store.ClassUnclassified.Retryable() || !strings.Contains(err.Error(), "31999") {
			t.Errorf("unknown number: %v: want retryable, naming the number", err)
		}
	})
}

// cutProxy forwards TCP to the server until the test cuts every connection.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() { _, _ = io.Copy(c, s); _ = c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}
