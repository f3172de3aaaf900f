package config

// Variables lists every environment variable Load reads, so that deploy/
// files and cloudbuild.yaml can be checked against the configuration the
// binary really has (a variable the deploy sets but Load never reads is a
// silent misconfiguration). vars_test.go keeps it equal to what Load reads.
var Variables = []string{
	"BACKBONE_ENV",
	"BACKBONE_SOURCES",
	"GCP_PROJECT",
	"GOOGLE_CLOUD_PROJECT",
	"PUBSUB_EMULATOR_HOST",
	"FUNCTION_TARGET",
	"PORT",

	"EVENT_STORE_DSN",
	"CLOUD_SQL_INSTANCE",
	"DB_USER",
	"DB_PASSWORD",
	"DB_NAME",
	"DB_IAM_AUTH",
	"DB_PRIVATE_IP",
	"DB_MAX_OPEN_CONNS",

	"NETSUITE_ACCOUNT_ID",
	"NETSUITE_BASE_URL",
	"NETSUITE_AUTH",
	"NETSUITE_CONSUMER_KEY",
	"NETSUITE_CONSUMER_SECRET",
	"NETSUITE_TOKEN_ID",
	"NETSUITE_TOKEN_SECRET",
	"NETSUITE_CLIENT_ID",
	"NETSUITE_CERTIFICATE_ID",
	"NETSUITE_PRIVATE_KEY",
	"NETSUITE_RECORD_MAPPING",
	"NETSUITE_TIMEOUT",
	"NETSUITE_MAX_CONCURRENCY",
	"NETSUITE_VERSION_FIELD",

	"SUITEX_BASE_URL",
	"SUITEX_SIGNING_SECRET",
	"SUITEX_TIMEOUT",
}
