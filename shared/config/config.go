package config

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is the whole deployment configuration. It is read once at start-up
// by Load; nothing reads the environment after that.
type Config struct {
	Env     Env
	Project string
	// EmulatorHost is PUBSUB_EMULATOR_HOST; the Pub/Sub client honours it on
	// its own, it is kept here so logs and `dev` can say where Pub/Sub is.
	EmulatorHost string

	DB DB

	// Sources are the accepted raw-event sources, in priority order: on equal
	// timestamps the earlier source wins a conflict (SPEC §5 step 3).
	Sources []string

	NetSuite NetSuite
	SuiteX   SuiteX

	FunctionTarget string
	Port           string
}

// DB says how to reach the event store.
type DB struct {
	DSN              string // EVENT_STORE_DSN, used as is when set
	CloudSQLInstance string // project:region:instance
	User, Password   string
	Name             string
	IAMAuth          bool
	PrivateIP        bool
	MaxOpenConns     int // DB_MAX_OPEN_CONNS, default 8 (Cloud Run: small pool per instance)
}

// NetSuite configures the NetSuite sink.
type NetSuite struct {
	AccountID      string
	BaseURL        string
	Auth           string // "tba" (default) or "oauth2"
	ConsumerKey    string
	ConsumerSecret string
	TokenID        string
	TokenSecret    string
	ClientID       string
	CertificateID  string
	PrivateKey     string
	// Mapping is NETSUITE_RECORD_MAPPING: JSON that maps backbone record
	// types and fields to NetSuite's; empty means the documented defaults.
	Mapping string
	Timeout time.Duration
	// MaxConcurrency is NETSUITE_MAX_CONCURRENCY: the backbone's share of
	// the account-wide concurrency limit, across every instance and Retry.
	MaxConcurrency int
	// VersionField is NETSUITE_VERSION_FIELD: a NetSuite field the upsert
	// sets to the record version it carries ("" = not sent).
	VersionField string
}

// SuiteX configures the SuiteX sink.
type SuiteX struct {
	BaseURL       string
	SigningSecret string
	Timeout       time.Duration
}

// DefaultSources is the source list and priority when BACKBONE_SOURCES is unset.
var DefaultSources = []string{"netsuite", "suitex"}

// Load reads and validates the configuration. getenv is os.Getenv in
// production and a map lookup in tests. Every error names the variable and
// the values it accepts; all problems are reported at once.
func Load(getenv func(string) string) (Config, error) {
	var errs []error
	c := Config{
		Project:        getenv("GCP_PROJECT"),
		EmulatorHost:   getenv("PUBSUB_EMULATOR_HOST"),
		FunctionTarget: getenv("FUNCTION_TARGET"),
		Port:           getenv("PORT"),
	}
	env, err := ParseEnv(getenv("BACKBONE_ENV"))
	if err != nil {
		errs = append(errs, err)
	}
	c.Env = env
	if c.Project == "" {
		c.Project = getenv("GOOGLE_CLOUD_PROJECT")
	}
	if c.Port == "" {
		c.Port = "8080"
	} else if p, err := strconv.Atoi(c.Port); err != nil || p < 1 || p > 65535 {
		errs = append(errs, fmt.Errorf("PORT=%q is not valid: accepted values are 1-65535", c.Port))
	}
	if c.FunctionTarget != "" && !slices.Contains(Targets, c.FunctionTarget) {
		errs = append(errs, fmt.Errorf("FUNCTION_TARGET=%q is not valid: accepted values are %s",
			c.FunctionTarget, strings.Join(Targets, ", ")))
	}

	c.DB = DB{
		DSN:              getenv("EVENT_STORE_DSN"),
		CloudSQLInstance: getenv("CLOUD_SQL_INSTANCE"),
		User:             getenv("DB_USER"),
		Password:         getenv("DB_PASSWORD"),
		Name:             getenv("DB_NAME"),
		MaxOpenConns:     8,
	}
	c.DB.IAMAuth, err = parseBool("DB_IAM_AUTH", getenv("DB_IAM_AUTH"), false)
	errs = append(errs, err)
	c.DB.PrivateIP, err = parseBool("DB_PRIVATE_IP", getenv("DB_PRIVATE_IP"), false)
	errs = append(errs, err)
	if v := getenv("DB_MAX_OPEN_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			errs = append(errs, fmt.Errorf("DB_MAX_OPEN_CONNS=%q is not valid: accepted values are 1-1000", v))
		} else {
			c.DB.MaxOpenConns = n
		}
	}
	if c.DB.DSN == "" && c.DB.CloudSQLInstance != "" {
		if strings.Count(c.DB.CloudSQLInstance, ":") != 2 {
			errs = append(errs, fmt.Errorf("CLOUD_SQL_INSTANCE=%q is not valid: accepted form is project:region:instance", c.DB.CloudSQLInstance))
		}
		if c.DB.User == "" {
			errs = append(errs, errors.New("DB_USER is not set: it is required with CLOUD_SQL_INSTANCE"))
		}
		if c.DB.Name == "" {
			errs = append(errs, errors.New("DB_NAME is not set: it is required with CLOUD_SQL_INSTANCE"))
		}
	}

	c.Sources = DefaultSources
	if v := getenv("BACKBONE_SOURCES"); v != "" {
		c.Sources = nil
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if !validSourceName(s) || slices.Contains(c.Sources, s) {
				errs = append(errs, fmt.Errorf("BACKBONE_SOURCES=%q is not valid: accepted is a comma-separated list of distinct names matching [a-z][a-z0-9_]*, highest priority first", v))
				break
			}
			c.Sources = append(c.Sources, s)
		}
	}

	c.NetSuite = NetSuite{
		AccountID:      getenv("NETSUITE_ACCOUNT_ID"),
		BaseURL:        getenv("NETSUITE_BASE_URL"),
		Auth:           getenv("NETSUITE_AUTH"),
		ConsumerKey:    getenv("NETSUITE_CONSUMER_KEY"),
		ConsumerSecret: getenv("NETSUITE_CONSUMER_SECRET"),
		TokenID:        getenv("NETSUITE_TOKEN_ID"),
		TokenSecret:    getenv("NETSUITE_TOKEN_SECRET"),
		ClientID:       getenv("NETSUITE_CLIENT_ID"),
		CertificateID:  getenv("NETSUITE_CERTIFICATE_ID"),
		PrivateKey:     getenv("NETSUITE_PRIVATE_KEY"),
		Mapping:        getenv("NETSUITE_RECORD_MAPPING"),
	}
	if c.NetSuite.Auth == "" {
		c.NetSuite.Auth = "tba"
	}
	if c.NetSuite.Auth != "tba" && c.NetSuite.Auth != "oauth2" {
		errs = append(errs, fmt.Errorf("NETSUITE_AUTH=%q is not valid: accepted values are tba, oauth2", c.NetSuite.Auth))
	}
	c.NetSuite.Timeout, err = parseDuration("NETSUITE_TIMEOUT", getenv("NETSUITE_TIMEOUT"), 30*time.Second)
	errs = append(errs, err)
	c.NetSuite.MaxConcurrency = 5
	if v := getenv("NETSUITE_MAX_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			errs = append(errs, fmt.Errorf("NETSUITE_MAX_CONCURRENCY=%q is not valid: accepted values are 1-1000 (the backbone's share of the account's concurrency limit)", v))
		} else {
			c.NetSuite.MaxConcurrency = n
		}
	}
	c.NetSuite.VersionField = getenv("NETSUITE_VERSION_FIELD")
	errs = append(errs, checkURL("NETSUITE_BASE_URL", c.NetSuite.BaseURL))

	c.SuiteX = SuiteX{
		BaseURL:       getenv("SUITEX_BASE_URL"),
		SigningSecret: getenv("SUITEX_SIGNING_SECRET"),
	}
	c.SuiteX.Timeout, err = parseDuration("SUITEX_TIMEOUT", getenv("SUITEX_TIMEOUT"), 15*time.Second)
	errs = append(errs, err)
	errs = append(errs, checkURL("SUITEX_BASE_URL", c.SuiteX.BaseURL))

	return c, errors.Join(errs...)
}

// RequireStore reports an error unless an event store is configured.
func (c Config) RequireStore() error {
	if c.DB.DSN == "" && c.DB.CloudSQLInstance == "" {
		return errors.New("EVENT_STORE_DSN or CLOUD_SQL_INSTANCE must be set: the event store is required")
	}
	return nil
}

// RequireNetSuite reports every missing NetSuite sink setting.
func (c Config) RequireNetSuite() error {
	n := c.NetSuite
	need := map[string]string{"NETSUITE_ACCOUNT_ID": n.AccountID, "NETSUITE_BASE_URL": n.BaseURL}
	if n.Auth == "oauth2" {
		need["NETSUITE_CLIENT_ID"] = n.ClientID
		need["NETSUITE_CERTIFICATE_ID"] = n.CertificateID
		need["NETSUITE_PRIVATE_KEY"] = n.PrivateKey
	} else {
		need["NETSUITE_CONSUMER_KEY"] = n.ConsumerKey
		need["NETSUITE_CONSUMER_SECRET"] = n.ConsumerSecret
		need["NETSUITE_TOKEN_ID"] = n.TokenID
		need["NETSUITE_TOKEN_SECRET"] = n.TokenSecret
	}
	return requireAll(need, "the NetSuite sink (NETSUITE_AUTH="+n.Auth+")")
}

// RequireSuiteX reports every missing SuiteX sink setting.
func (c Config) RequireSuiteX() error {
	return requireAll(map[string]string{
		"SUITEX_BASE_URL":       c.SuiteX.BaseURL,
		"SUITEX_SIGNING_SECRET": c.SuiteX.SigningSecret,
	}, "the SuiteX sink")
}

func requireAll(need map[string]string, what string) error {
	var missing []string
	for k, v := range need {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("%s is not set: required by %s", strings.Join(missing, ", "), what)
}

// SourcePriority returns the rank of source s: lower wins. Unknown sources
// rank last.
func (c Config) SourcePriority(s string) int {
	if i := slices.Index(c.Sources, s); i >= 0 {
		return i
	}
	return len(c.Sources)
}

func validSourceName(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func parseBool(name, v string, def bool) (bool, error) {
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def, fmt.Errorf("%s=%q is not valid: accepted values are true, false", name, v)
	}
	return b, nil
}

func parseDuration(name, v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return def, fmt.Errorf("%s=%q is not valid: accepted is a positive Go duration such as 30s", name, v)
	}
	return d, nil
}

func checkURL(name, v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s=%q is not valid: accepted is an absolute http(s) URL", name, v)
	}
	return nil
}
