package netsuite

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
)

func changes(t *testing.T, s string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDefaultMapping(t *testing.T) {
	t.Parallel()
	m, err := ParseMapping("")
	if err != nil {
		t.Fatal(err)
	}
	typ, body, err := m.Apply("customer", changes(t, `{"email":"ada@example.com","phone":null,"company_name":"Acme","custentity_tier":"gold","firstName":"Ada"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"companyName":"Acme","custentity_tier":"gold","email":"ada@example.com","firstName":"Ada","phone":null}`
	if typ != "customer" || string(body) != want {
		t.Fatalf("got %s %s, want customer %s", typ, body, want)
	}
	for rt, want := range map[string]string{"sales_order": "salesOrder", "purchase_order": "purchaseOrder",
		"support_case": "supportCase", "customrecord_fleet": "customrecord_fleet"} {
		typ, _, err := m.Apply(rt, changes(t, `{"x":1}`))
		if err != nil || typ != want {
			t.Errorf("%s maps to %q (%v), want %q", rt, typ, err, want)
		}
	}
}

func TestConfiguredMapping(t *testing.T) {
	t.Parallel()
	m, err := ParseMapping(`{"types":{
		"customer":{"type":"customer","fields":{"tier":"custentity_tier","internal_note":""}},
		"order":{"type":"salesOrder","only_mapped":true,"fields":{"memo":"memo","po":"otherRefNum"}}
	},"field_names":"verbatim"}`)
	if err != nil {
		t.Fatal(err)
	}
	typ, body, err := m.Apply("customer", changes(t, `{"tier":"gold","internal_note":"x","company_name":"Acme"}`))
	if err != nil || typ != "customer" || string(body) != `{"company_name":"Acme","custentity_tier":"gold"}` {
		t.Fatalf("customer: %s %s %v", typ, body, err)
	}
	typ, body, err = m.Apply("order", changes(t, `{"memo":"m","po":"P-1","secret_flag":true}`))
	if err != nil || typ != "salesOrder" || string(body) != `{"memo":"m","otherRefNum":"P-1"}` {
		t.Fatalf("order: %s %s %v", typ, body, err)
	}
	// Everything dropped: nothing to send.
	typ, body, err = m.Apply("order", changes(t, `{"secret_flag":true}`))
	if err != nil || typ != "salesOrder" || body != nil {
		t.Fatalf("all dropped: %s %s %v", typ, body, err)
	}
	// Defaults survive for types the operator did not list.
	if typ, _, err := m.Apply("vendor", changes(t, `{"a":1}`)); err != nil || typ != "vendor" {
		t.Fatalf("vendor: %s %v", typ, err)
	}
}

func TestStrictMappingRejectsUnmappedTypes(t *testing.T) {
	t.Parallel()
	m, err := ParseMapping(`{"strict":true,"types":{"customer":{}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if typ, _, err := m.Apply("customer", changes(t, `{"a":1}`)); err != nil || typ != "customer" {
		t.Fatalf("customer: %s %v", typ, err)
	}
	_, _, err = m.Apply("vendor", changes(t, `{"a":1}`))
	var me *mappingError
	if !errors.As(err, &me) || me.reason != "unmapped_record_type" {
		t.Fatalf("vendor under strict: %v", err)
	}
}

func TestMappingCollisionIsAFailure(t *testing.T) {
	t.Parallel()
	m, _ := ParseMapping("")
	_, _, err := m.Apply("customer", changes(t, `{"company_name":"a","companyName":"b"}`))
	var me *mappingError
	if !errors.As(err, &me) || me.reason != "mapping_collision" {
		t.Fatalf("collision: %v", err)
	}
}

func TestBadMappingsFailAtStartUp(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		`{`,
		`{"typos":{}}`,
		`{"types":{"Customer":{}}}`,
		`{"types":{"customer":{"type":"bad type"}}}`,
		`{"types":{"customer":{"fields":{"a":"x","b":"x"}}}}`,
		`{"types":{"customer":{"fields":{"a":"no spaces"}}}}`,
		`{"field_names":"kebab"}`,
		`{} {}`,
	} {
		if _, err := ParseMapping(s); err == nil || !strings.Contains(err.Error(), "NETSUITE_RECORD_MAPPING") {
			t.Errorf("ParseMapping(%s): error %v, want one naming NETSUITE_RECORD_MAPPING", s, err)
		}
	}
}

func TestParsePrivateKey(t *testing.T) {
	t.Parallel()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(rk)
	sec1, _ := x509.MarshalECPrivateKey(ek)
	enc := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	for name, tc := range map[string]struct{ pem, alg string }{
		"pkcs8 rsa":         {enc("PRIVATE KEY", pkcs8), "PS256"},
		"pkcs1 rsa":         {enc("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), "PS256"},
		"sec1 ec":           {enc("EC PRIVATE KEY", sec1), "ES256"},
		"flattened newline": {strings.ReplaceAll(enc("PRIVATE KEY", pkcs8), "\n", `\n`), "PS256"},
	} {
		_, alg, err := ParsePrivateKey(tc.pem)
		if err != nil || alg != tc.alg {
			t.Errorf("%s: alg %q err %v, want %s", name, alg, err, tc.alg)
		}
	}
	garbage := "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"
	_, _, err = ParsePrivateKey(garbage)
	if err == nil || strings.Contains(err.Error(), "c2VjcmV0LWtleS1tYXRlcmlhbA") {
		t.Fatalf("garbage key: %v (must fail without quoting the key)", err)
	}
	if _, _, err := ParsePrivateKey("not a pem"); err == nil {
		t.Fatal("non-PEM accepted")
	}
}

// ES256 assertions verify with the public key (the PS256 path is exercised
// against the fake NetSuite).
func TestES256Assertion(t *testing.T) {
	t.Parallel()
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sig, err := signJWS(ek, "ES256", []byte("a.b"))
	if err != nil || len(sig) != 64 {
		t.Fatalf("sig %d bytes, %v", len(sig), err)
	}
	d := sha256.Sum256([]byte("a.b"))
	if !ecdsa.Verify(&ek.PublicKey, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("ES256 signature does not verify")
	}
	if _, err := signJWS(ek, "PS256", []byte("a.b")); err == nil {
		t.Fatal("PS256 with an EC key accepted")
	}
}
