package http

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// FuzzRequestHead: any bytes an agent sends as a request head are either refused or admitted
// as a request the rules can judge as it will be forwarded: an upper-case token method, an
// origin-form path the target check accepts, header names that are tokens and values with no
// line break or NUL, no hop-by-hop or address field left, and a body framing of one kind. The
// parser never panics, whatever the input.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /v1/x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"PUT /x HTTP/1.1\r\nHost: a\r\nX_Tenant: 1\r\nX-Tenant: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAccept: a\r\nAccept: b\r\nConnection: x-a\r\nX-A: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := readHead(bufio.NewReader(bytes.NewReader(in)), 64<<10)
		if err != nil {
			return
		}
		r := &Request{}
		framing, _, ref := admit(h, r, &Credential{Header: "X-Api-Key", Value: "secret-value-123456"})
		if ref != nil {
			if ref.status < 400 || ref.status > 599 {
				t.Fatalf("refusal status %d", ref.status)
			}
			return
		}
		if !validToken(r.Method) || strings.ToUpper(r.Method) != r.Method {
			t.Fatalf("admitted method %q", r.Method)
		}
		target := r.Path
		if r.RawQuery != "" {
			target += "?" + r.RawQuery
		}
		if _, _, err := checkTarget(target); err != nil && !(r.Method == "OPTIONS" && r.Path == "*") {
			t.Fatalf("admitted target %q the target check refuses: %v", target, err)
		}
		for k, vs := range r.Header {
			if !validToken(k) {
				t.Fatalf("admitted field name %q", k)
			}
			if isHopByHop(k, nil) || addressHeaders[k] || strings.HasPrefix(k, "X-Forwarded-") || strings.EqualFold(k, "X-Api-Key") || k == "Authorization" {
				t.Fatalf("admitted field %q, which is never forwarded from the agent", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("admitted value %q of %s", v, k)
				}
			}
		}
		if framing.chunked && framing.length != 0 {
			t.Fatalf("framing both chunked and of length %d", framing.length)
		}
	})
}
