package devidp

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no users", Config{}, "no users"},
		{"user without subject", Config{Users: []User{{Email: "x@y"}}}, "without subject"},
		{"duplicate user", Config{Users: []User{{Subject: "a"}, {Subject: "a"}}}, "duplicate"},
		{"unknown auto-approve user", Config{Users: []User{{Subject: "a"}}, AutoApprove: "b"}, "not configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Start("127.0.0.1:0", tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDiscoveryAndKeys(t *testing.T) {
	s, err := Start("127.0.0.1:0", Config{Users: []User{{Subject: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get(s.Issuer() + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Issuer     string   `json:"issuer"`
		Device     string   `json:"device_authorization_endpoint"`
		JWKS       string   `json:"jwks_uri"`
		Revocation string   `json:"revocation_endpoint"`
		PKCE       []string `json:"code_challenge_methods_supported"`
		Grants     []string `json:"grant_types_supported"`
		Algs       []string `json:"id_token_signing_alg_values_supported"`
	}
	err = json.NewDecoder(resp.Body).Decode(&d)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if d.Issuer != s.Issuer() || d.Device == "" || d.JWKS == "" || d.Revocation == "" ||
		!slices.Contains(d.PKCE, "S256") || !slices.Contains(d.Grants, "urn:ietf:params:oauth:grant-type:device_code") ||
		!slices.Contains(d.Grants, "refresh_token") || !slices.Equal(d.Algs, []string{"RS256"}) {
		t.Fatalf("discovery %+v", d)
	}

	keys := func() []string {
		resp, err := http.Get(d.JWKS)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var set struct {
			Keys []struct {
				Kid string `json:"kid"`
				Alg string `json:"alg"`
			} `json:"keys"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, k := range set.Keys {
			ids = append(ids, k.Kid)
		}
		return ids
	}
	k1 := s.KeyIDs()[0]
	if got := keys(); !slices.Equal(got, []string{k1}) {
		t.Fatalf("jwks %q", got)
	}
	k2, err := s.RotateKey()
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(); !slices.Equal(got, []string{k1, k2}) {
		t.Fatalf("jwks after rotation %q", got)
	}
	if err := s.RetireKey(k2); err == nil {
		t.Fatal("retired the current key")
	}
	if err := s.RetireKey(k1); err != nil {
		t.Fatal(err)
	}
	if got := keys(); !slices.Equal(got, []string{k2}) {
		t.Fatalf("jwks after retiring %s: %q", k1, got)
	}
	if err := s.ApproveDevice("ABCD-EFGH", "a"); err == nil {
		t.Fatal("approved an unknown user code")
	}
}
