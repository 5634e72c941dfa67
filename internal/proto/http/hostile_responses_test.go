package http

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

// testJWT is a token the secret detectors find (header.payload.signature).
const testJWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

// exportCSV is what an export endpoint answers: a customer's e-mail and card number.
const exportCSV = "id,email,card\n1," + testEmail + "," + testCard + "\n"

func utf16LE(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

func utf16BE(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u>>8), byte(u))
	}
	return b
}

// ebcdic037 encodes the digits, space and letters of s in IBM code page 037.
func ebcdic037(s string) []byte {
	var b []byte
	for _, c := range []byte(s) {
		switch {
		case c >= '0' && c <= '9':
			b = append(b, 0xF0+c-'0')
		case c == ' ':
			b = append(b, 0x40)
		default:
			b = append(b, c)
		}
	}
	return b
}

func zipped(t testing.TB, name, content string) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, err := zw.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, content)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readings are the ways an agent could read bytes it received: as they are, as JSON (escapes
// decoded, line by line too), as UTF-16 or UTF-32 (NULs dropped), as UTF-7, as EBCDIC digits,
// gunzipped (as often as it unwraps), inflated (zlib or raw deflate), unzipped.
func readings(b []byte) []string {
	out := []string{string(b)}
	for _, doc := range append([][]byte{b}, bytes.Split(b, []byte("\n"))...) {
		doc = bytes.TrimPrefix(bytes.TrimPrefix(doc, []byte("\x1e")), []byte("data:"))
		var v any
		if json.Unmarshal(doc, &v) == nil {
			out = append(out, jsonText(v))
		}
	}
	out = append(out, string(bytes.ReplaceAll(b, []byte{0}, nil)))
	out = append(out, strings.ReplaceAll(string(b), "+AEA-", "@"))
	var ebcdic []byte
	for _, c := range b {
		switch {
		case c >= 0xF0 && c <= 0xF9:
			ebcdic = append(ebcdic, '0'+c-0xF0)
		case c == 0x40:
			ebcdic = append(ebcdic, ' ')
		default:
			ebcdic = append(ebcdic, c)
		}
	}
	out = append(out, string(ebcdic))
	for layer := b; ; {
		zr, err := gzip.NewReader(bytes.NewReader(layer))
		if err != nil {
			break
		}
		if layer, err = io.ReadAll(zr); err != nil && len(layer) == 0 {
			break
		}
		out = append(out, string(layer))
	}
	if zr, err := zlib.NewReader(bytes.NewReader(b)); err == nil {
		inflated, _ := io.ReadAll(zr)
		out = append(out, string(inflated))
	}
	inflated, _ := io.ReadAll(flate.NewReader(bytes.NewReader(b)))
	out = append(out, string(inflated))
	if zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b))); err == nil {
		for _, f := range zr.File {
			if rc, err := f.Open(); err == nil {
				content, _ := io.ReadAll(rc)
				rc.Close()
				out = append(out, string(content))
			}
		}
	}
	return out
}

// jsonText is every key and string of a decoded JSON value, one after the other.
func jsonText(v any) string {
	switch v := v.(type) {
	case string:
		return v + "\n"
	case []any:
		var b strings.Builder
		for _, e := range v {
			b.WriteString(jsonText(e))
		}
		return b.String()
	case map[string]any:
		var b strings.Builder
		for k, e := range v {
			b.WriteString(k + "\n" + jsonText(e))
		}
		return b.String()
	}
	return ""
}

// leaked names the secret an agent could read in b, or "".
func leaked(b []byte) string {
	for _, r := range readings(b) {
		flat := strings.ReplaceAll(r, " ", "")
		switch {
		case strings.Contains(r, testEmail):
			return testEmail
		case strings.Contains(flat, "4111111111111111"):
			return testCard
		case strings.Contains(r, testJWT):
			return "the JWT"
		}
	}
	return ""
}

// leakedHeader names the secret an agent could read in a response's header fields, or "".
func leakedHeader(h nethttp.Header) string {
	var b strings.Builder
	for k, vv := range h {
		b.WriteString(k + ": " + strings.Join(vv, ", ") + "\n")
	}
	return leaked([]byte(b.String()))
}

// TestReviewMaskedResponsesLeakNothing: with masking on, whatever form the service gives a
// sensitive value (one the agent can ask for with a query parameter, an Accept or Accept-Charset
// field, or data it wrote earlier), the agent gets it masked or not at all (502, nothing sent).
func TestReviewMaskedResponsesLeakNothing(t *testing.T) {
	protobuf := append([]byte{0x0a, byte(len(testEmail))}, testEmail...)
	protobuf = append(append(protobuf, 0x12, byte(len(testCard))), testCard...)
	cases := []struct {
		name        string
		method      string
		header      map[string]string // sent by the agent
		contentType string
		encoding    string
		status      int               // what the upstream answers
		respHeader  map[string]string // more fields of the upstream's answer
		body        func(r *nethttp.Request) []byte
		want        int // status the agent must get (200: masked; 502: withheld)
	}{
		{name: "JSON object keyed by e-mail", contentType: "application/json",
			body: constant(`{"by_email":{"` + testEmail + `":{"plan":"gold"}},"cards":{"` + testCard + `":1}}`), want: 200},
		{name: "JSON lines keyed by e-mail", contentType: "application/x-ndjson",
			body: constant(`{"` + testEmail + `":1}` + "\n" + `{"ok":true}` + "\n"), want: 200},
		{name: "event stream data keyed by e-mail", contentType: "text/event-stream",
			body: constant(`data: {"` + testEmail + `":1}` + "\n\n"), want: 200},
		{name: "escaped key", contentType: "application/json",
			body: constant(`{"ada\u0040example.com":1}`), want: 200},
		{name: "UTF-16 text", contentType: "text/plain; charset=utf-16le",
			body: constant(string(utf16LE(exportCSV))), want: 502},
		{name: "UTF-16 JSON with a BOM", contentType: "application/json; charset=utf-16",
			body: constant("\xfe\xff" + string(utf16BE(`{"email":"`+testEmail+`"}`))), want: 502},
		{name: "UTF-16 CSV without a label", contentType: "text/csv",
			body: constant(string(utf16LE(exportCSV))), want: 502},
		{name: "UTF-16 octet-stream with a BOM", contentType: "application/octet-stream",
			body: constant("\xff\xfe" + string(utf16LE(exportCSV))), want: 502},
		{name: "UTF-7", contentType: "text/plain; charset=utf-7",
			body: constant(strings.ReplaceAll(exportCSV, "@", "+AEA-")), want: 502},
		{name: "EBCDIC", contentType: "text/plain; charset=IBM037",
			body: constant(string(ebcdic037("card " + testCard))), want: 502},
		{name: "charset chosen by Accept-Charset", header: map[string]string{"Accept-Charset": "utf-16le"},
			body: func(r *nethttp.Request) []byte {
				if strings.Contains(r.Header.Get("Accept-Charset"), "utf-16") {
					return utf16LE(exportCSV)
				}
				return []byte(exportCSV)
			}, contentType: "text/csv", want: 200},
		{name: "zip export", header: map[string]string{"Accept": "application/zip"}, contentType: "application/zip",
			body: func(*nethttp.Request) []byte { return zipped(t, "customers.csv", exportCSV) }, want: 502},
		{name: "gzip file", contentType: "application/gzip",
			body: func(*nethttp.Request) []byte { return []byte(gzipped(t, exportCSV)) }, want: 502},
		{name: "octet-stream with a control byte first", contentType: "application/octet-stream",
			body: constant("\x01" + exportCSV), want: 502},
		{name: "octet-stream, text then UTF-16", contentType: "application/octet-stream",
			body: constant(strings.Repeat("id,note\n", 80) + string(utf16LE(exportCSV))), want: 502},
		{name: "compressed twice, labelled once", contentType: "text/csv", encoding: "gzip",
			body: func(*nethttp.Request) []byte { return []byte(gzipped(t, exportCSV)) }, want: 502},
		{name: "protobuf", header: map[string]string{"Accept": "application/x-protobuf"}, contentType: "application/x-protobuf",
			body: constant(string(protobuf)), want: 502},
		{name: "JSON labelled as an image", contentType: "image/png",
			body: constant(`{"email":"` + testEmail + `","card":"` + testCard + `"}`), want: 200},
		{name: "Location of a redirect", contentType: "text/html", status: 302,
			respHeader: map[string]string{"Location": "/v1/customers?email=" + testEmail},
			body:       constant("moved"), want: 302},
		{name: "fields carrying values", contentType: "application/json",
			respHeader: map[string]string{"X-Customer-Email": testEmail, "X-Card": testCard, "Set-Cookie": "session=" + testJWT + "; Path=/; HttpOnly"},
			body:       constant(`{}`), want: 200},
		{name: "a field named by a card number", contentType: "application/json",
			respHeader: map[string]string{"X-Card-4111111111111111": "1"},
			body:       constant(`{}`), want: 200},
		{name: "zip without a Content-Type", contentType: "-",
			body: func(*nethttp.Request) []byte { return zipped(t, "customers.csv", exportCSV) }, want: 502},
		{name: "text without a Content-Type", contentType: "-", body: constant(exportCSV), want: 200},
		{name: "gzip-encoded image that is CSV", contentType: "image/png", encoding: "gzip", body: constant(exportCSV), want: 200},
		{name: "GZIP in capitals", contentType: "text/csv", respHeader: map[string]string{"Content-Encoding": "GZIP"},
			body: func(*nethttp.Request) []byte { return []byte(gzipped(t, exportCSV)) }, want: 200},
		{name: "identity, then gzip", contentType: "text/csv", respHeader: map[string]string{"Content-Encoding": "identity, gzip"},
			body: func(*nethttp.Request) []byte { return []byte(gzipped(t, exportCSV)) }, want: 200},
		{name: "gzip with trailing garbage", contentType: "text/csv", respHeader: map[string]string{"Content-Encoding": "gzip"},
			body: func(*nethttp.Request) []byte { return []byte(gzipped(t, exportCSV) + "trailing " + testEmail) }, want: 502},
		{name: "gzip then brotli", contentType: "text/csv", respHeader: map[string]string{"Content-Encoding": "gzip, br"},
			body: func(*nethttp.Request) []byte { return []byte(gzipped(t, exportCSV)) }, want: 502},
		{name: "HEAD: fields carrying values", method: "HEAD", contentType: "application/json",
			respHeader: map[string]string{"X-Customer-Email": testEmail, "Link": "</v1/customers?after=" + testEmail + ">; rel=next"},
			body:       constant(`{}`), want: 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
				body := c.body(r)
				if c.contentType == "-" {
					w.Header()["Content-Type"] = nil // and the server does not sniff one
				} else {
					w.Header().Set("Content-Type", c.contentType)
				}
				if c.encoding != "" {
					w.Header().Set("Content-Encoding", c.encoding)
					body = []byte(gzipped(t, string(body)))
				}
				for k, v := range c.respHeader {
					w.Header()[k] = []string{v}
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.WriteHeader(cmp(c.status, 200))
				if r.Method != "HEAD" {
					w.Write(body)
				}
			})
			hook := newFakeHook()
			hook.masker = testPlan(t)
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
			method := cmp(c.method, "GET")
			conn := dialRaw(t, p.addr)
			req := method + " /v1/export HTTP/1.1\r\nHost: api.test\r\n"
			for k, v := range c.header {
				req += k + ": " + v + "\r\n"
			}
			conn.send(t, req+"\r\n")
			resp, body := conn.response(t, method)
			if what := leaked(body); what != "" {
				t.Errorf("the agent got %s in the body (status %d): %q", what, resp.StatusCode, body)
			}
			if what := leakedHeader(resp.Header); what != "" {
				t.Errorf("the agent got %s in the header: %q", what, resp.Header)
			}
			if resp.StatusCode != c.want {
				t.Errorf("status %d, want %d: %q", resp.StatusCode, c.want, body)
			}
			e := hook.waitExchanges(t, 1)[0]
			if what := leaked(e.Body); what != "" {
				t.Errorf("the record holds %s: %q", what, e.Body)
			}
			sent := nethttp.Header{}
			for k, v := range c.respHeader {
				sent.Set(k, v)
			}
			if leakedHeader(sent) != "" && resp.StatusCode != 502 && !e.Masked {
				t.Error("fields were masked, but the exchange is not recorded as masked")
			}
			if c.want == 502 {
				if msg, _ := errorBody(t, resp, body); !strings.Contains(msg, "mask") {
					t.Errorf("the 502 does not say masking is why: %q", msg)
				}
				if e.Err == nil {
					t.Error("no error recorded for the withheld response")
				}
			}
			// The connection still serves the next request.
			conn.send(t, "GET /v1/next HTTP/1.1\r\nHost: api.test\r\n\r\n")
			if resp, _ := conn.response(t, "GET"); resp.StatusCode == 0 {
				t.Error("the connection did not serve the next request")
			}
		})
	}
}

func constant(s string) func(*nethttp.Request) []byte {
	return func(*nethttp.Request) []byte { return []byte(s) }
}

// cmp is the first of its arguments that is not the zero value.
func cmp[T comparable](vals ...T) T {
	var zero T
	for _, v := range vals {
		if v != zero {
			return v
		}
	}
	return zero
}

// TestReviewMaskedPassThrough: what is still passed or masked as it was: real images and PDFs
// as they are, text that is text masked, JSON still JSON after its keys are masked.
func TestReviewMaskedPassThrough(t *testing.T) {
	cases := []struct {
		name, contentType, encoding, body string
		want                              string // the body the agent must get
	}{
		{"PNG", "image/png", "", pngStart + "pixels", pngStart + "pixels"},
		{"PNG without a Content-Type", "-", "", pngStart + "pixels", pngStart + "pixels"},
		{"gzip PNG, decoded to be looked into", "image/png", "gzip", pngStart + "pixels", pngStart + "pixels"},
		{"PNG served as octet-stream", "application/octet-stream", "", pngStart + "pixels", pngStart + "pixels"},
		{"PDF", "application/pdf", "", "%PDF-1.7 text", "%PDF-1.7 text"},
		{"Latin-1 text", "text/plain; charset=ISO-8859-1", "", "caf\xe9 " + testEmail, "caf\xe9 [REDACTED:email]"},
		{"UTF-8 JSON with a quoted charset", `application/json; charset="UTF-8"`, "", `{"k":"v"}`, `{"k":"v"}`},
		{"JSON with a masked key stays JSON", "application/json", "", `{"` + testEmail + `":{"a":1},"b":"x"}`, `{"[REDACTED:email]":{"a":1},"b":"x"}`},
		{"JSON with escapes in clean keys", "application/json", "", `{"a\"b":1,"c\\":"` + testEmail + `"}`, `{"a\"b":1,"c\\":"[REDACTED:email]"}`},
		{"form feed and escape are text", "text/plain", "", "page\f\x1b[1m " + testEmail, "page\f\x1b[1m [REDACTED:email]"},
		{"JSON sequence keeps its separators", "application/json-seq", "", "\x1e{\"" + testEmail + "\":1}\n", "\x1e{\"[REDACTED:email]\":1}\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
				if c.contentType == "-" {
					w.Header()["Content-Type"] = nil
				} else {
					w.Header().Set("Content-Type", c.contentType)
				}
				body := c.body
				if c.encoding != "" {
					w.Header().Set("Content-Encoding", c.encoding)
					body = gzipped(t, body)
				}
				io.WriteString(w, body)
			})
			hook := newFakeHook()
			hook.masker = testPlan(t)
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
			resp, body := get(t, testClient(t), "http://"+p.addr+"/doc")
			if resp.StatusCode != 200 || string(body) != c.want {
				t.Errorf("status %d, body %q, want %q", resp.StatusCode, body, c.want)
			}
			if enc := resp.Header.Get("Content-Encoding"); enc != "" {
				t.Errorf("Content-Encoding %q for a body sent decoded", enc)
			}
		})
	}
}

// TestReviewBrokenLineNotSent: a line of JSON lines or an event stream that the upstream breaks
// off in the middle is not masked and sent as if it were whole: the masker cannot see a value
// cut in two, so nothing of it reaches the agent.
func TestReviewBrokenLineNotSent(t *testing.T) {
	pad := strings.Repeat("x", 40<<10)
	partial := `{"pad":"` + pad + `","card":"4111 1111 1111 11` // cut before the last two digits
	for _, ct := range []string{"application/x-ndjson", "text/event-stream"} {
		t.Run(ct, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(waitLimit))
				io.ReadAtLeast(conn, make([]byte, 1), 1) // the request
				line := partial
				if ct == "text/event-stream" {
					line = "data: " + partial
				}
				io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: "+ct+"\r\nTransfer-Encoding: chunked\r\n\r\n")
				io.WriteString(conn, "6\r\n{\"a\":1\r\n")
				io.WriteString(conn, "2\r\n}\n\r\n")
				io.WriteString(conn, strconv.FormatInt(int64(len(line)), 16)+"\r\n"+line+"\r\n")
				// The upstream dies without ending the body.
			}()
			hook := newFakeHook()
			hook.masker = testPlan(t)
			p := startProxy(t, &Server{}, Upstream{Addr: ln.Addr().String()}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, "GET /stream HTTP/1.1\r\nHost: api.test\r\n\r\n")
			got, _ := io.ReadAll(conn.br)
			if strings.Contains(string(got), "4111 1111 1111 11") || strings.Contains(string(got), pad[:1024]) {
				t.Errorf("the broken line reached the agent (%d bytes)", len(got))
			}
			if e := hook.waitExchanges(t, 1)[0]; e.Err == nil {
				t.Error("no error recorded for the broken stream")
			}
		})
	}
}

// TestReviewCredentialNeverEchoed: a service that reflects the credential the proxy added (a
// debug endpoint echoing request headers, an error quoting the token, a redirect carrying it)
// does not hand it to the agent, masked connection or not, in any of the forms it is sent in:
// the header's value, the secret alone, a Basic password, JSON- or URL-escaped, split across
// the chunks of a stream.
func TestReviewCredentialNeverEchoed(t *testing.T) {
	credentials := []struct {
		name   string
		cred   Credential
		secret string // what must never reach the agent
	}{
		{"bearer", Credential{Header: "Authorization", Value: "Bearer prod-token-8f2c/41d9+e7a0"}, "prod-token-8f2c/41d9+e7a0"},
		{"basic", Credential{Header: "Authorization", Value: "Basic " + base64.StdEncoding.EncodeToString([]byte("svc:prod-pass-9a8b7c6d"))}, "prod-pass-9a8b7c6d"},
		{"api key", Credential{Header: "X-Api-Key", Value: "prod-key-1c0ffee2d"}, "prod-key-1c0ffee2d"},
	}
	reflect := func(w nethttp.ResponseWriter, r *nethttp.Request) {
		value := r.Header.Get("Authorization") + r.Header.Get("X-Api-Key")
		secret := value
		if _, after, ok := strings.Cut(value, " "); ok {
			secret = after
		}
		if strings.HasPrefix(value, "Basic ") {
			userPass, _ := base64.StdEncoding.DecodeString(secret)
			_, secret, _ = strings.Cut(string(userPass), ":")
		}
		switch r.URL.Path {
		case "/json":
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"headers": r.Header, "note": "token " + secret})
		case "/json-escaped":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"token":"`+strings.ReplaceAll(secret, "/", `\/`)+`"}`)
		case "/text":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "401: token "+secret+" expired; you sent "+value)
		case "/field":
			w.Header().Set("X-Echo", value)
			w.Header().Set("X-Token", secret)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "{}")
		case "/redirect":
			w.Header().Set("Location", "/login?token="+url.QueryEscape(secret))
			w.WriteHeader(302)
		case "/binary":
			w.Header().Set("Content-Type", "image/png")
			io.WriteString(w, pngStart+secret+pngStart)
		case "/gzip":
			// A service that compresses whatever it was asked for.
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Encoding", "gzip")
			io.WriteString(w, gzipped(t, "token "+secret))
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			half := len(secret) / 2
			io.WriteString(w, "data: token "+secret[:half])
			w.(nethttp.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
			io.WriteString(w, secret[half:]+"\n\n")
		}
	}
	paths := []string{"/json", "/json-escaped", "/text", "/field", "/redirect", "/binary", "/gzip", "/stream"}
	for _, cr := range credentials {
		for _, masked := range []bool{false, true} {
			for _, path := range paths {
				t.Run(fmt.Sprintf("%s/masked=%v%s", cr.name, masked, path), func(t *testing.T) {
					up := startUpstream(t, reflect)
					hook, conn := credentialProxy(t, up.addr(), cr.cred, masked)
					conn.send(t, "GET "+path+" HTTP/1.1\r\nHost: api.test\r\nAccept-Encoding: gzip\r\n\r\n")
					resp, body := conn.response(t, "GET")
					if resp.Header.Get("Content-Encoding") == "gzip" {
						zr, err := gzip.NewReader(bytes.NewReader(body))
						if err != nil {
							t.Fatal(err)
						}
						body, _ = io.ReadAll(zr)
					}
					var got strings.Builder
					for k, vv := range resp.Header {
						got.WriteString(k + ": " + strings.Join(vv, ", ") + "\n")
					}
					got.Write(body)
					seen := strings.ReplaceAll(got.String(), `\/`, "/")
					if unescaped, err := url.QueryUnescape(seen); err == nil {
						seen += unescaped
					}
					for _, leak := range []string{cr.secret, cr.cred.Value, strings.TrimPrefix(cr.cred.Value, "Basic ")} {
						if strings.Contains(seen, leak) {
							t.Errorf("the agent got the credential (%q): %q", leak, got.String())
						}
					}
					e := hook.waitExchanges(t, 1)[0]
					if strings.Contains(string(e.Body), cr.secret) {
						t.Errorf("the record holds the credential: %q", e.Body)
					}
					if resp.StatusCode != 200 && resp.StatusCode != 302 {
						t.Errorf("status %d: %q", resp.StatusCode, body)
					}
				})
			}
		}
	}
}

// TestReviewEchoFilterSplits: the credential is overwritten wherever a stream's pieces cut it,
// the body keeps its length (a Content-Length stays true), and nothing but the start of a form is
// held back between pieces.
func TestReviewEchoFilterSplits(t *testing.T) {
	cred := &Credential{Header: "Authorization", Value: "Bearer prod-token-8f2c/41d9+e7a0"}
	forms := credentialForms(cred)
	bodies := []string{
		"token prod-token-8f2c/41d9+e7a0 expired",
		`{"t":"prod-token-8f2c\/41d9+e7a0"}`,
		"/login?t=" + url.QueryEscape("prod-token-8f2c/41d9+e7a0"),
		"you sent Bearer prod-token-8f2c/41d9+e7a0.",
		"prod-token-8f2c/41d9+e7a",       // a form cut short at the end is not the credential
		"prod-prod-token-8f2c/41d9+e7a0", // a false start right before the real one
	}
	for _, body := range bodies {
		for cut := 0; cut <= len(body); cut++ {
			f := &echoFilter{forms: forms}
			var got []byte
			got = append(got, f.filter([]byte(body[:cut]))...)
			got = append(got, f.filter([]byte(body[cut:]))...)
			got = append(got, f.rest()...)
			if len(got) != len(body) {
				t.Fatalf("%q cut at %d: %d bytes out for %d in", body, cut, len(got), len(body))
			}
			if strings.Contains(strings.ReplaceAll(string(got), `\/`, "/"), "prod-token-8f2c/41d9+e7a0") ||
				strings.Contains(string(got), url.QueryEscape("prod-token-8f2c/41d9+e7a0")) {
				t.Errorf("%q cut at %d: %q", body, cut, got)
			}
		}
	}
	// An ordinary piece is sent whole at once: streaming stays streaming.
	f := &echoFilter{forms: forms}
	if out := f.filter([]byte("data: {\"n\": 1}\n\n")); string(out) != "data: {\"n\": 1}\n\n" {
		t.Errorf("held back %q of an ordinary event", f.tail)
	}
}
