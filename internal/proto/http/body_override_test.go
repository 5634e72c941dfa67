package http

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
)

// encodedBody is a request body with the Content-Type and Content-Encoding it is sent with.
type encodedBody struct {
	contentType, encoding, body string
}

// refusedBody is a body the proxy refuses, with the status it refuses it with.
type refusedBody struct {
	encodedBody
	status int
}

// overrideBodies are bodies that Express's body-parser (and ASP.NET's request decompression, and
// qs) read as naming DELETE, while their bytes do not say "_method" at the top of a JSON object
// or a form as sent (review, 2026-12-07).
func overrideBodies(t *testing.T) map[string]refusedBody {
	const charset = 415 // not read at all
	bodies := map[string]refusedBody{
		"UTF-16LE JSON": {encodedBody{"application/json; charset=utf-16le", "", utf16LEString(`{"_method":"DELETE"}`)}, charset},
	}
	for name, b := range map[string]encodedBody{
		"gzip form":                     {"application/x-www-form-urlencoded", "gzip", gzipBytes(t, "_method=DELETE")},
		"x-gzip form":                   {"application/x-www-form-urlencoded", "x-gzip", gzipBytes(t, "_method=DELETE")},
		"gzip JSON":                     {"application/json", "gzip", gzipBytes(t, `{"_method":"DELETE"}`)},
		"deflate (zlib) JSON":           {"application/json", "deflate", zlibBytes(t, `{"_method":"DELETE"}`)},
		"deflate (raw) form":            {"application/x-www-form-urlencoded", "deflate", rawDeflateBytes(t, "_method=DELETE")},
		"JSON after a UTF-8 BOM":        {"application/json", "", "\xef\xbb\xbf" + `{"_method":"DELETE"}`},
		"form after a UTF-8 BOM":        {"application/x-www-form-urlencoded", "", "\xef\xbb\xbf_method=DELETE"},
		"JSON nested past 10000 levels": {"application/json", "", `{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `,"_method":"DELETE"}`},
		"form list _method[] (qs, PHP)": {"application/x-www-form-urlencoded", "", "_method[]=DELETE"},
		"form list _method[0]":          {"application/x-www-form-urlencoded", "", "_method%5B0%5D=DELETE"},
		"form key [_method] (qs)":       {"application/x-www-form-urlencoded", "", "[_method]=DELETE"},
		"gzip of a BOM and JSON":        {"application/json", "gzip", gzipBytes(t, "\xef\xbb\xbf"+`{"_method":"DELETE"}`)},
	} {
		bodies[name] = refusedBody{b, 400}
	}
	return bodies
}

// TestEncodedBodyMethodOverrideRefused: the "_method" check reads a body as servers' body
// parsers do: decompressed (gzip, deflate as zlib or raw), without a UTF-8 BOM, a JSON object to
// its end however deep it nests, a form's bracketed names by the name they nest under. What it
// cannot read so is refused: other codings, more than one, charsets in which "_method" is not its
// ASCII bytes, a JSON object it cannot read to its end, a body that decompresses past the limit.
// Bodies that name no other method still pass, forwarded as they were sent.
func TestEncodedBodyMethodOverrideRefused(t *testing.T) {
	seen := make(chan seenRequest, 100)
	up := startUpstream(t, captureHandler(seen))
	hook := newFakeHook()
	p := startProxy(t, &Server{MaxRequestBody: 64 << 10}, Upstream{Addr: up.addr()}, hook)

	type bodyCase struct {
		name string
		encodedBody
		status int
	}
	var cases []bodyCase
	for name, b := range overrideBodies(t) {
		cases = append(cases, bodyCase{name, b.encodedBody, b.status})
	}
	cases = append(cases, []bodyCase{
		{"brotli", encodedBody{"application/json", "br", "\x0b\x08\x80" + `{"_method":"DELETE"}` + "\x03"}, 415},
		{"zstd form", encodedBody{"application/x-www-form-urlencoded", "zstd", "\x28\xb5\x2f\xfd_method=DELETE"}, 415},
		{"gzip twice", encodedBody{"application/json", "gzip, gzip", gzipBytes(t, gzipBytes(t, `{"_method":"DELETE"}`))}, 415},
		{"UTF-7 form", encodedBody{"application/x-www-form-urlencoded; charset=utf-7", "", "+AF8-method=DELETE"}, 415},
		{"UTF-16 text", encodedBody{"text/plain; charset=UTF-16", "", utf16LEString(`{"_method":"DELETE"}`)}, 415},
		{"corrupt gzip", encodedBody{"application/json", "gzip", "not gzip at all"}, 400},
		{"gzip with data after it", encodedBody{"application/x-www-form-urlencoded", "gzip", gzipBytes(t, "a=1") + "&_method=DELETE"}, 400},
		{"gzip bomb past the limit", encodedBody{"application/octet-stream", "gzip", gzipBytes(t, strings.Repeat("0", 1<<20))}, 413},
		{"JSON cut short", encodedBody{"application/json", "", `{"a":[1,2`}, 400},
		{"JSON with a bad value", encodedBody{"text/plain", "", `{"a":tru, "_method":"DELETE"}`}, 400},

		{"gzip JSON with _method nested", encodedBody{"application/json", "gzip", gzipBytes(t, `{"title":"x","meta":{"_method":"DELETE"}}`)}, 200},
		{"gzip NDJSON", encodedBody{"application/x-ndjson", "gzip", gzipBytes(t, "{\"index\":{}}\n{\"title\":\"x\"}\n")}, 200},
		{"deflate form", encodedBody{"application/x-www-form-urlencoded", "deflate", zlibBytes(t, "name=x&method=DELETE")}, 200},
		{"identity coding", encodedBody{"application/x-www-form-urlencoded", "identity", "name=x"}, 200},
		{"JSON after a BOM", encodedBody{"application/json", "", "\xef\xbb\xbf" + `{"title":"x"}`}, 200},
		{"deep JSON array", encodedBody{"application/json", "", `{"a":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `}`}, 200},
		{"Latin-1 form", encodedBody{"application/x-www-form-urlencoded; charset=ISO-8859-1", "", "name=caf\xe9"}, 200},
		{"text that is not JSON", encodedBody{"text/plain", "", "hello {world}"}, 200},
		{"form value _method[]", encodedBody{"application/x-www-form-urlencoded", "", "note=_method[]"}, 200},
		{"form key a[_method]", encodedBody{"application/x-www-form-urlencoded", "", "a[_method]=DELETE"}, 200},
	}...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(hook.judged())
			for len(seen) > 0 {
				<-seen // a case before this one that was forwarded and should not have been
			}
			conn := dialRaw(t, p.addr)
			conn.send(t, postRaw(c.encodedBody))
			resp, body := conn.response(t, "POST")
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, c.status, body)
			}
			judged := len(hook.judged()) - before
			if c.status != 200 {
				if judged != 0 {
					t.Fatalf("judged %d: a body the enforcer cannot check must not reach the rules", judged)
				}
				if msg, hint := errorBody(t, resp, body); msg == "" || hint == "" {
					t.Errorf("refusal %q, hint %q: both must say what is wrong and what to do", msg, hint)
				}
				return
			}
			if judged != 1 {
				t.Fatalf("judged %d, want 1", judged)
			}
			got := <-seen
			if got.Body != c.body || got.Header.Get("Content-Encoding") != c.encoding {
				t.Errorf("forwarded body %q with Content-Encoding %q, want it as sent", got.Body, got.Header.Get("Content-Encoding"))
			}
		})
	}
	for _, c := range cases {
		if c.status == 413 {
			continue // Inspect decodes up to the default limit, not this Server's
		}
		t.Run("Inspect/"+c.name, func(t *testing.T) {
			h := map[string][]string{"Host": {"api.test"}, "Content-Type": {c.contentType}}
			if c.encoding != "" {
				h["Content-Encoding"] = []string{c.encoding}
			}
			_, err := Inspect("POST", "/v1/items/7", 1, h, []byte(c.body), nil)
			status := 200
			if ref, ok := err.(*refusal); ok {
				status = ref.status
			} else if err != nil {
				t.Fatal(err)
			}
			if status != c.status {
				t.Errorf("Inspect: %v; want status %d, as Serve", err, c.status)
			}
		})
	}
}

// TestBodyMethodOverrideOnExpress: the bodies of TestEncodedBodyMethodOverrideRefused, sent to a
// real Express server with body-parser and method-override: none runs as DELETE. It needs node,
// and express@4 and method-override in testdata/express (`npm install` there) or in the
// directory ENFORCER_TEST_NODE_MODULES names (scripts/deps.sh installs both); without them it
// fails and says what to run.
func TestBodyMethodOverrideOnExpress(t *testing.T) {
	addr := startExpress(t)
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: addr}, hook)
	// The server itself runs a plain "_method" as DELETE: the test sees what it runs.
	direct := dialRaw(t, addr)
	direct.send(t, postRaw(encodedBody{"application/x-www-form-urlencoded", "", "_method=DELETE"}))
	if _, body := direct.response(t, "POST"); !strings.Contains(string(body), `"ran":"DELETE"`) {
		t.Fatalf("the Express server does not run _method: %s", body)
	}
	for name, b := range overrideBodies(t) {
		t.Run(name, func(t *testing.T) {
			conn := dialRaw(t, p.addr)
			conn.send(t, postRaw(b.encodedBody))
			resp, body := conn.response(t, "POST")
			if strings.Contains(string(body), `"ran":"DELETE"`) {
				t.Fatalf("judged as POST, Express ran DELETE (status %d)", resp.StatusCode)
			}
			if resp.StatusCode != b.status {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, b.status, body)
			}
		})
	}
}

// startExpress starts testdata/express/server.js on loopback and returns its address.
func startExpress(t *testing.T) string {
	t.Helper()
	modules := os.Getenv("ENFORCER_TEST_NODE_MODULES")
	if modules == "" {
		modules, _ = filepath.Abs("testdata/express")
	}
	modules = filepath.Join(modules, "node_modules")
	for _, m := range []string{"express", "method-override"} {
		if _, err := os.Stat(filepath.Join(modules, m)); err != nil {
			t.Fatalf("no %s in %s: run scripts/deps.sh (or npm install in testdata/express)", m, modules)
		}
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("no node: run scripts/deps.sh")
	}
	cmd := exec.Command("node", "testdata/express/server.js")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	port, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the Express server did not start: %v", err)
	}
	return "127.0.0.1:" + strings.TrimSpace(port)
}

func postRaw(b encodedBody) string {
	raw := "POST /v1/items/7 HTTP/1.1\r\nHost: api.test\r\nContent-Type: " + b.contentType + "\r\n"
	if b.encoding != "" {
		raw += "Content-Encoding: " + b.encoding + "\r\n"
	}
	return raw + "Content-Length: " + strconv.Itoa(len(b.body)) + "\r\n\r\n" + b.body
}

func gzipBytes(t *testing.T, s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func zlibBytes(t *testing.T, s string) string {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func rawDeflateBytes(t *testing.T, s string) string {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func utf16LEString(s string) string {
	var b bytes.Buffer
	for _, u := range utf16.Encode([]rune(s)) {
		b.WriteByte(byte(u))
		b.WriteByte(byte(u >> 8))
	}
	return b.String()
}
