package http

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	nethttp "net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// pngStart is a PNG signature and header: what DetectContentType calls image/png.
const pngStart = "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"

func gzipped(t testing.TB, s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	io.WriteString(zw, s)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// failingMasker fails on every body (or on the lines holding "fail", when onlyMarked).
type failingMasker struct{ onlyMarked bool }

var errMaskBroken = errors.New("masker broken")

func (f failingMasker) MaskJSON(in, dst []byte) ([]byte, bool, error) { return f.MaskText(in, dst) }

func (f failingMasker) MaskText(in, dst []byte) ([]byte, bool, error) {
	if f.onlyMarked && !bytes.Contains(in, []byte("fail")) {
		return in, false, nil
	}
	return nil, false, errMaskBroken
}

// TestResponseMasking serves each body from a real upstream and checks what the client gets
// and what is recorded: masked by type, binary passed, encodings decoded or refused, limits.
func TestResponseMasking(t *testing.T) {
	jsonDoc := `{"customer":{"email":"` + testEmail + `","card":"` + testCard + `"},"note":"ok"}`
	big := `{"pad":"` + strings.Repeat("x", 2<<10) + `","email":"` + testEmail + `"}`
	type masking int
	const (
		plan masking = iota
		none
		failing
	)
	cases := []struct {
		name        string
		contentType string // "-" for none at all
		encoding    string
		body        string
		chunked     bool // the upstream sends no Content-Length
		masking     masking
		status      int
		masked      bool   // the client must not get the secrets
		verbatim    bool   // the client gets the body byte for byte
		binary      bool   // recorded as binary
		wantEnc     string // Content-Encoding the client gets
	}{
		{name: "JSON", contentType: "application/json", body: jsonDoc, status: 200, masked: true},
		{name: "JSON with charset", contentType: "application/json; charset=utf-8", body: jsonDoc, status: 200, masked: true},
		{name: "problem+json", contentType: "application/problem+json", body: jsonDoc, status: 422, masked: true},
		{name: "labelled JSON that is not", contentType: "application/json", body: "card " + testCard + " for " + testEmail + " {", status: 200, masked: true},
		{name: "HTML", contentType: "text/html", body: "<p>" + testEmail + "</p><p>" + testCard + "</p>", status: 200, masked: true},
		{name: "XML", contentType: "application/xml", body: "<c><e>" + testEmail + "</e><n>" + testCard + "</n></c>", status: 200, masked: true},
		{name: "SVG is XML", contentType: "image/svg+xml", body: "<svg><text>" + testEmail + " " + testCard + "</text></svg>", status: 200, masked: true},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: "email=" + testEmail + "&card=" + testCard, status: 200, masked: true},
		{name: "no Content-Type", contentType: "-", body: "card " + testCard + " for " + testEmail, status: 200, masked: true},
		{name: "unknown type that looks like text", contentType: "application/vnd.custom", body: "card " + testCard + " for " + testEmail, status: 200, masked: true},
		{name: "octet-stream that looks like text", contentType: "application/octet-stream", body: "card " + testCard + " for " + testEmail, status: 200, masked: true},
		{name: "octet-stream that is binary", contentType: "application/octet-stream", body: pngStart + testEmail + testCard, status: 200, verbatim: true, binary: true},
		{name: "image", contentType: "image/png", body: pngStart + testEmail + testCard, status: 200, verbatim: true, binary: true},
		{name: "PDF", contentType: "application/pdf", body: "%PDF-1.7 " + testEmail + " " + testCard, status: 200, verbatim: true, binary: true},
		{name: "gzip JSON is decoded and masked", contentType: "application/json", encoding: "gzip", body: jsonDoc, status: 200, masked: true},
		{name: "gzip octet-stream text is decoded and masked", contentType: "application/octet-stream", encoding: "gzip", body: "card " + testCard + " for " + testEmail, status: 200, masked: true},
		{name: "brotli JSON", contentType: "application/json", encoding: "br", body: jsonDoc, status: 502},
		{name: "gzip twice", contentType: "application/json", encoding: "gzip, gzip", body: jsonDoc, status: 502},
		{name: "corrupt gzip", contentType: "application/json", encoding: "gzip", body: "not gzip " + testEmail, status: 502},
		{name: "brotli image is withheld", contentType: "image/png", encoding: "br", body: pngStart + testEmail, status: 502},
		{name: "JSON over the masking limit", contentType: "application/json", body: big, status: 502},
		{name: "JSON over the masking limit, no length", contentType: "application/json", body: big, chunked: true, status: 502},
		{name: "gzip JSON over the limit once decoded", contentType: "application/json", encoding: "gzip", body: big, status: 502},
		{name: "masking fails", contentType: "application/json", body: jsonDoc, masking: failing, status: 502},
		{name: "masking fails on text", contentType: "text/plain", body: "hello", masking: failing, status: 502},
		{name: "no masker: unchanged", contentType: "application/json", body: jsonDoc, masking: none, status: 200, verbatim: true},
		{name: "no masker: brotli passes", contentType: "application/json", encoding: "br", body: jsonDoc, masking: none, status: 200, verbatim: true, wantEnc: "br"},
		{name: "no masker: image", contentType: "image/png", body: pngStart + testEmail, masking: none, status: 200, verbatim: true, binary: true},
		{name: "no masker: octet-stream binary", contentType: "application/octet-stream", body: pngStart + testEmail, masking: none, status: 200, verbatim: true, binary: true},
		{name: "no masker: streamed without length", contentType: "text/plain", body: strings.Repeat("line\n", 1000), chunked: true, masking: none, status: 200, verbatim: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
				body := c.body
				if strings.HasPrefix(c.encoding, "gzip") && !strings.HasPrefix(body, "not gzip") {
					body = gzipped(t, body)
					if c.encoding == "gzip, gzip" {
						body = gzipped(t, body)
					}
				}
				if c.contentType == "-" {
					w.Header()["Content-Type"] = nil
				} else {
					w.Header().Set("Content-Type", c.contentType)
				}
				if c.encoding != "" {
					w.Header().Set("Content-Encoding", c.encoding)
				}
				w.Header().Set("Content-Md5", "c2VlbiBieSB0aGUgdXBzdHJlYW0=")
				if !c.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				}
				if c.status == 502 {
					w.WriteHeader(200) // the proxy makes the 502
				} else {
					w.WriteHeader(c.status)
				}
				for len(body) > 0 {
					n := min(len(body), 512)
					io.WriteString(w, body[:n])
					if c.chunked {
						w.(nethttp.Flusher).Flush()
					}
					body = body[n:]
				}
			})
			hook := newFakeHook()
			switch c.masking {
			case plan:
				hook.masker = testPlan(t)
			case failing:
				hook.masker = failingMasker{}
			}
			p := startProxy(t, &Server{MaxMaskedBody: 1 << 10, RecordBody: 16 << 10}, Upstream{Addr: up.addr()}, hook)
			resp, body := get(t, testClient(t), "http://"+p.addr+"/doc")
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %q", resp.StatusCode, c.status, body)
			}
			e := hook.waitExchanges(t, 1)[0]
			if e.Status != c.status {
				t.Errorf("recorded status %d", e.Status)
			}
			if c.status == 502 {
				errorBody(t, resp, body)
				if bytes.Contains(body, []byte(testEmail)) || bytes.Contains(body, []byte("1111 1111")) || bytes.Contains(body, []byte("pad")) {
					t.Errorf("502 carries the upstream's body: %q", body)
				}
				if e.Err == nil {
					t.Error("no error recorded for the 502")
				}
				return
			}
			switch {
			case c.verbatim:
				if string(body) != c.body {
					t.Errorf("body changed: %q", body)
				}
				if e.Masked {
					t.Error("recorded as masked")
				}
			case c.masked:
				if bytes.Contains(body, []byte(testEmail)) || bytes.Contains(body, []byte("4111 1111 1111 1111")) || bytes.Contains(body, []byte("4111111111111111")) {
					t.Errorf("secret passed: %q", body)
				}
				if !bytes.Contains(body, []byte("1111")) {
					t.Errorf("body %q lost more than the secrets", body)
				}
				if !e.Masked {
					t.Error("not recorded as masked")
				}
				if resp.Header.Get("Content-Md5") != "" {
					t.Error("the upstream's digest of the unmasked body was passed")
				}
			}
			if got := resp.Header.Get("Content-Encoding"); got != c.wantEnc {
				t.Errorf("Content-Encoding %q, want %q", got, c.wantEnc)
			}
			if !c.chunked && resp.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d for a body of %d", resp.ContentLength, len(body))
			}
			if e.Binary != c.binary {
				t.Errorf("recorded Binary=%v, want %v", e.Binary, c.binary)
			}
			if e.BodyBytes != int64(len(body)) || e.Err != nil {
				t.Errorf("recorded %d bytes, err %v; client got %d", e.BodyBytes, e.Err, len(body))
			}
			switch {
			case c.binary && len(e.Body) != 0:
				t.Errorf("binary body recorded: %q", e.Body)
			case !c.binary && string(e.Body) != string(body):
				t.Errorf("recorded body %q, client got %q", e.Body, body)
			}
		})
	}
}

// TestRecordedBodyTruncated: the record keeps the first RecordBody bytes of what was sent.
func TestRecordedBodyTruncated(t *testing.T) {
	body := strings.Repeat("0123456789", 100)
	up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	})
	for _, masker := range []Masker{nil, testPlan(t)} {
		hook := newFakeHook()
		hook.masker = masker
		p := startProxy(t, &Server{RecordBody: 64}, Upstream{Addr: up.addr()}, hook)
		_, got := get(t, testClient(t), "http://"+p.addr+"/")
		e := hook.waitExchanges(t, 1)[0]
		if string(got) != body || string(e.Body) != body[:64] || e.BodyBytes != int64(len(body)) || !e.Truncated {
			t.Errorf("masker %T: client got %d bytes; recorded %q, %d bytes, truncated=%v", masker, len(got), e.Body, e.BodyBytes, e.Truncated)
		}
	}
}

// TestBodilessResponses: HEAD, 204 and 304 carry no body; a masked HEAD drops a length the
// masked body would not have.
func TestBodilessResponses(t *testing.T) {
	doc := `{"email":"` + testEmail + `","pad":"xxxxxxxx"}`
	length := strconv.Itoa(len(doc))
	up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.WriteHeader(304)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", length)
			if r.Method != "HEAD" {
				io.WriteString(w, doc)
			}
		}
	})
	for _, c := range []struct {
		name, method, path string
		masker             bool
		status             int
		length             string
	}{
		{"HEAD masked", "HEAD", "/doc", true, 200, ""},
		{"HEAD unmasked", "HEAD", "/doc", false, 200, length},
		{"204", "GET", "/204", true, 204, ""},
		{"304", "GET", "/304", true, 304, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			hook := newFakeHook()
			if c.masker {
				hook.masker = testPlan(t)
			}
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, c.method+" "+c.path+" HTTP/1.1\r\nHost: api.test\r\n\r\n")
			resp, body := conn.response(t, c.method)
			if resp.StatusCode != c.status || len(body) != 0 || resp.Header.Get("Content-Length") != c.length || len(resp.TransferEncoding) != 0 {
				t.Errorf("status %d, body %q, Content-Length %q, Transfer-Encoding %v", resp.StatusCode, body, resp.Header.Get("Content-Length"), resp.TransferEncoding)
			}
			conn.send(t, "GET /204 HTTP/1.1\r\nHost: api.test\r\n\r\n")
			if resp, _ := conn.response(t, "GET"); resp.StatusCode != 204 {
				t.Errorf("next request on the connection: status %d", resp.StatusCode)
			}
		})
	}
}

// TestGzipBomb: a small gzip body that decodes to far more than MaxMaskedBody is refused after
// decoding at most the limit, not all of it.
func TestGzipBomb(t *testing.T) {
	const decoded = 256 << 20
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range decoded / len(zeros) {
		zw.Write(zeros)
	}
	zw.Close()
	up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(bomb.Bytes())
	})
	hook := newFakeHook()
	hook.masker = testPlan(t)
	p := startProxy(t, &Server{MaxMaskedBody: 1 << 20}, Upstream{Addr: up.addr()}, hook)
	client := testClient(t)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, body := get(t, client, "http://"+p.addr+"/bomb")
	runtime.ReadMemStats(&after)
	if resp.StatusCode != 502 {
		t.Fatalf("status %d, want 502: %q", resp.StatusCode, body[:min(len(body), 200)])
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > decoded/4 {
		t.Errorf("serving a %d-byte bomb allocated %d bytes; it decodes to %d, the limit is %d", bomb.Len(), grew, decoded, 1<<20)
	}
}

// TestProxyFieldsUnderEverySpelling: the fields the proxy decides for the upstream (identity
// bodies for the masker and the credential's filter, UTF-8, no byte ranges) reach it under one
// spelling only: an agent's "Accept_Encoding" beside the proxy's "Accept-Encoding" is the one
// field a server that reads '_' as '-' (CGI, PHP, Puma) might obey (review, 2026-12-07).
func TestProxyFieldsUnderEverySpelling(t *testing.T) {
	seen := make(chan seenRequest, 10)
	up := startUpstream(t, captureHandler(seen))
	for _, c := range []struct {
		name   string
		masker bool
		sent   string            // the agent's fields
		want   map[string]string // by fieldKey: the only value the upstream may get ("": none)
	}{
		{"Accept_Encoding, masked", true, "Accept_Encoding: br\r\n", map[string]string{"Accept-Encoding": "identity"}},
		{"accept_encoding with a credential", false, "accept_encoding: gzip\r\n", map[string]string{"Accept-Encoding": "identity"}},
		{"Accept_Charset", true, "Accept_Charset: utf-16le\r\n", map[string]string{"Accept-Charset": "utf-8"}},
		{"If_Range with Range", true, "Range: bytes=0-9\r\nIf_Range: \"v1\"\r\n", map[string]string{"Range": "", "If-Range": ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			hook := newFakeHook()
			if c.masker {
				hook.masker = testPlan(t)
			}
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr(), Credential: &Credential{Header: "X-Api-Key", Value: "prod-key-9f3a"}}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, "GET /doc HTTP/1.1\r\nHost: api.test\r\n"+c.sent+"\r\n")
			if resp, body := conn.response(t, "GET"); resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := <-seen
			for key, want := range c.want {
				var values []string
				for k, vv := range got.Header {
					if fieldKey(k) == key {
						values = append(values, vv...)
					}
				}
				if (want == "" && len(values) != 0) || (want != "" && (len(values) != 1 || values[0] != want)) {
					t.Errorf("the upstream got %s as %q, want only %q", key, values, want)
				}
			}
		})
	}
}
