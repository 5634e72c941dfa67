package http

import (
	"strings"
	"testing"
)

// TestUpstreamErrorHoldsNoCredential (from a review, 2026-12-07): a service whose malformed
// answer quotes the credential ("X-Echo X-Api-Key <secret>" as a header line) had the secret
// written into the exchange's error, hence the record, and the daemon's log, with masking on or
// off: a random token matches no detector.
func TestUpstreamErrorHoldsNoCredential(t *testing.T) {
	const secret = "tok_9f8e7d6c5b4a39281706f5e4"
	addr := rawUpstream(t, "HTTP/1.1 200 OK\r\nX-Echo X-Api-Key "+secret+"\r\n\r\n")
	for _, masked := range []bool{false, true} {
		hook := newFakeHook()
		if masked {
			hook.masker = testPlan(t)
		}
		p := startProxy(t, &Server{}, Upstream{Addr: addr, Credential: &Credential{Header: "X-Api-Key", Value: secret}}, hook)
		resp, body := get(t, testClient(t), "http://"+p.addr+"/")
		if resp.StatusCode != 502 {
			t.Fatalf("masked %v: status %d: %s", masked, resp.StatusCode, body)
		}
		e := hook.waitExchanges(t, 1)[0]
		if e.Err == nil || !strings.Contains(e.Err.Error(), "malformed") {
			t.Fatalf("masked %v: recorded error %v, want the malformed response", masked, e.Err)
		}
		for _, text := range []string{e.Err.Error(), p.logs.String(), string(body)} {
			if strings.Contains(text, secret) || strings.Contains(text, secret[4:20]) {
				t.Errorf("masked %v: the credential in %q", masked, text)
			}
		}
	}
}
