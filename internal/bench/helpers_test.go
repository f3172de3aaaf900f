package bench

import (
	"testing"

	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// proxied gives a test its own database and a counting proxy in front of
// it: the database, the normalised DSN through the proxy, and the proxy
// (closed when the test ends).
func proxied(t *testing.T) (d *mysqltest.DB, dsn string, p *Proxy) {
	t.Helper()
	d = mysqltest.New(t)
	mc, err := mysql.ParseDSN(d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	p, err = StartProxy(mc.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	via, err := WithAddr(d.DSN, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if dsn, err = mysql.DSN(via); err != nil {
		t.Fatal(err)
	}
	return d, dsn, p
}
