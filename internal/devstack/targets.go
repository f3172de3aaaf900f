package devstack

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/internal/fake/suitexfake"
	"github.com/backbone-sync/backbone/shared/config"
)

// Credentials that only the local fakes accept.
const (
	netsuiteAccount = "DEV_ACCOUNT"
	consumerKey     = "dev-consumer-key"
	consumerSecret  = "dev-consumer-secret"
	tokenID         = "dev-token-id"
	tokenSecret     = "dev-token-secret"
	suitexSecret    = "dev-suitex-signing-secret"
)

// configure starts the target fakes the options do not replace with real
// targets and returns the functions' configuration, as their environment
// would give it.
func (s *Stack) configure(o Options) (config.Config, error) {
	vars := map[string]string{
		"BACKBONE_ENV":         string(o.Env),
		"GCP_PROJECT":          s.Project,
		"PUBSUB_EMULATOR_HOST": s.Emulator,
		"EVENT_STORE_DSN":      s.WorkerDSN,
	}
	if o.NetSuiteURL == "" {
		s.NetSuite = &netsuitefake.Server{Account: netsuiteAccount, ConsumerKey: consumerKey, ConsumerSecret: consumerSecret,
			TokenID: tokenID, TokenSecret: tokenSecret, Log: o.Log}
		url, err := s.listenLocal(s.NetSuite)
		if err != nil {
			return config.Config{}, err
		}
		for k, v := range map[string]string{"NETSUITE_BASE_URL": url, "NETSUITE_ACCOUNT_ID": netsuiteAccount,
			"NETSUITE_CONSUMER_KEY": consumerKey, "NETSUITE_CONSUMER_SECRET": consumerSecret,
			"NETSUITE_TOKEN_ID": tokenID, "NETSUITE_TOKEN_SECRET": tokenSecret} {
			vars[k] = v
		}
	} else {
		vars["NETSUITE_BASE_URL"] = o.NetSuiteURL
		for _, k := range []string{"NETSUITE_ACCOUNT_ID", "NETSUITE_AUTH", "NETSUITE_CONSUMER_KEY", "NETSUITE_CONSUMER_SECRET", "NETSUITE_TOKEN_ID",
			"NETSUITE_TOKEN_SECRET", "NETSUITE_CLIENT_ID", "NETSUITE_CERTIFICATE_ID", "NETSUITE_PRIVATE_KEY", "NETSUITE_RECORD_MAPPING"} {
			vars[k] = o.Getenv(k)
		}
	}
	if o.SuiteXURL == "" {
		s.SuiteX = &suitexfake.Server{Secret: suitexSecret, Log: o.Log}
		url, err := s.listenLocal(s.SuiteX)
		if err != nil {
			return config.Config{}, err
		}
		vars["SUITEX_BASE_URL"], vars["SUITEX_SIGNING_SECRET"] = url, suitexSecret
	} else {
		vars["SUITEX_BASE_URL"], vars["SUITEX_SIGNING_SECRET"] = o.SuiteXURL, o.Getenv("SUITEX_SIGNING_SECRET")
	}
	vars["NETSUITE_TIMEOUT"], vars["SUITEX_TIMEOUT"] = "10s", "10s"
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		return cfg, err
	}
	cfg.DB.MaxOpenConns = 32
	return cfg, nil
}

// listenLocal serves h on a free loopback port until the stack stops.
func (s *Stack) listenLocal(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	s.stopFuncs = append(s.stopFuncs, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String(), nil
}
