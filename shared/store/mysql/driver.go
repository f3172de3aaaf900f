package mysql

import (
	"database/sql/driver"
	"fmt"

	"github.com/go-sql-driver/mysql"
)

// The driver's names that tools and tests need beside this package. Both
// packages are called mysql, so a file that imported the two would need an
// alias; these let such a file import this package alone.

// Config is a parsed go-sql-driver DSN.
type Config = mysql.Config

// MySQLError is the server's error answer. Every error the store returns
// keeps it in the chain (errors.As), classified or not.
type MySQLError = mysql.MySQLError

// ParseDSN parses a go-sql-driver DSN as is (DSN normalises one).
func ParseDSN(dsn string) (*Config, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse DSN: %w", err)
	}
	return mc, nil
}

// NewConnector is the driver's connector for mc, for tools that wrap the
// connections they open (statement counters).
func NewConnector(mc *Config) (driver.Connector, error) {
	c, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, fmt.Errorf("connector for %s: %w", mc.Addr, err)
	}
	return c, nil
}
