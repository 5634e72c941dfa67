package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/control"
)

// TestTrustAgentCA: `enforcer run` points the command's TLS clients at the agent CA. Unset
// variables name the daemon's files (a bundle variable nothing when the daemon has no bundle);
// one the caller set names a copy of the certificates of the caller's file with the agent CA
// after them; a file that is not certificates alone is never copied.
func TestTrustAgentCA(t *testing.T) {
	dir := t.TempDir()
	caPEM, _ := testCA(t, "agent CA")
	ca := filepath.Join(dir, "agent-ca.pem")
	bundle := filepath.Join(dir, "agent-ca-bundle.pem")
	os.WriteFile(ca, caPEM, 0o644)
	os.WriteFile(bundle, caPEM, 0o644)
	ownPEM, _ := testCA(t, "caller's CA")
	own := filepath.Join(dir, "own.pem")
	os.WriteFile(own, append([]byte("# the caller's roots\n"), append(ownPEM, "trailing words\n"...)...), 0o644)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(key)
	secret := filepath.Join(dir, "secret.pem")
	os.WriteFile(secret, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	shadow := filepath.Join(dir, "shadow")
	os.WriteFile(shadow, []byte("root:$6$secret:19000::::::\n"), 0o600)

	for _, c := range []struct {
		name     string
		set      map[string]string
		bundle   string
		want     map[string]string // variable → "ca", "bundle", "copy", "unset", or a path kept
		notInAny string
	}{
		{"nothing set", nil, bundle, map[string]string{"SSL_CERT_FILE": "bundle", "CURL_CA_BUNDLE": "bundle", "NODE_EXTRA_CA_CERTS": "ca"}, ""},
		{"no system roots", nil, "", map[string]string{"SSL_CERT_FILE": "unset", "REQUESTS_CA_BUNDLE": "unset", "NODE_EXTRA_CA_CERTS": "ca"}, ""},
		{"the caller's roots", map[string]string{"SSL_CERT_FILE": own, "NODE_EXTRA_CA_CERTS": own}, bundle,
			map[string]string{"SSL_CERT_FILE": "copy", "NODE_EXTRA_CA_CERTS": "copy", "CURL_CA_BUNDLE": "bundle"}, "trailing words"},
		{"a key is not copied", map[string]string{"SSL_CERT_FILE": secret}, bundle, map[string]string{"SSL_CERT_FILE": secret}, "PRIVATE KEY"},
		{"nor any other file", map[string]string{"CURL_CA_BUNDLE": shadow}, bundle, map[string]string{"CURL_CA_BUNDLE": shadow}, "secret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range agentCAEnv {
				if val, ok := c.set[v.name]; ok {
					t.Setenv(v.name, val)
				} else {
					t.Setenv(v.name, "")
					os.Unsetenv(v.name)
				}
			}
			cleanup := trustAgentCA(&control.Run{AgentCA: ca, AgentCABundle: c.bundle})
			var copies []string
			for name, want := range c.want {
				got, set := os.LookupEnv(name)
				switch want {
				case "ca", "bundle":
					if p := map[string]string{"ca": ca, "bundle": bundle}[want]; got != p {
						t.Errorf("$%s = %q, want %s", name, got, p)
					}
				case "unset":
					if set {
						t.Errorf("$%s = %q, want it unset", name, got)
					}
				case "copy":
					b, err := os.ReadFile(got)
					if err != nil || !strings.Contains(string(b), string(ownPEM)) || !strings.HasSuffix(string(b), string(caPEM)) {
						t.Errorf("$%s = %q holds %q (%v): want the caller's certificates, then the agent CA", name, got, b, err)
					}
					copies = append(copies, got)
				default:
					if got != want {
						t.Errorf("$%s = %q, want %q kept", name, got, want)
					}
				}
			}
			for _, v := range agentCAEnv {
				if p := os.Getenv(v.name); p != "" && c.notInAny != "" {
					if b, _ := os.ReadFile(p); strings.Contains(string(b), c.notInAny) && p != c.set[v.name] {
						t.Errorf("$%s = %s holds %q", v.name, p, c.notInAny)
					}
				}
			}
			cleanup()
			for _, p := range copies {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s outlived the command", p)
				}
			}
		})
	}
}
