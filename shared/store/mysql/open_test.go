package mysql

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/backbone-sync/backbone/shared/config"
)

// TestCloudSQLConfig: IAM authentication rides in the connector's ephemeral
// certificate, so the driver never sends a password in cleartext, and every
// connection goes through the connector's dialer.
func TestCloudSQLConfig(t *testing.T) {
	t.Parallel()
	errDialed := errors.New("dialed")
	for _, iam := range []bool{true, false} {
		c := config.DB{CloudSQLInstance: "p:us-central1:i", User: "bb-merge-sandbox", Name: "backbone", IAMAuth: iam}
		mc := cloudSQLConfig(c, func(context.Context) (net.Conn, error) { return nil, errDialed })
		if mc.AllowCleartextPasswords {
			t.Errorf("IAMAuth=%v: cleartext passwords allowed", iam)
		}
		if mc.User != c.User || mc.DBName != c.Name || mc.Addr != c.CloudSQLInstance || mc.Net != "cloudsql" {
			t.Errorf("IAMAuth=%v: config %+v", iam, mc)
		}
		if _, err := mc.DialFunc(t.Context(), "tcp", "ignored:3306"); !errors.Is(err, errDialed) {
			t.Errorf("IAMAuth=%v: DialFunc did not use the connector: %v", iam, err)
		}
	}
}
