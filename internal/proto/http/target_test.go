package http

import (
	"bufio"
	"bytes"
	nethttp "net/http"
	"net/url"
	pathpkg "path"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

func TestCheckTargetAccepts(t *testing.T) {
	for _, c := range []struct{ target, path, query string }{
		{"/", "/", ""},
		{"/v1/users", "/v1/users", ""},
		{"/v1/users/", "/v1/users/", ""},
		{"/a/b%20c/%7Euser", "/a/b%20c/%7Euser", ""},
		{"/.well-known/openid-configuration", "/.well-known/openid-configuration", ""},
		{"/a..b/c.", "/a..b/c.", ""},
		{"/caf%C3%A9", "/caf%C3%A9", ""},
		{"/x:y@z!$&'()*+,=", "/x:y@z!$&'()*+,=", ""},
		{"/search?q=%2F..%2F&x=1+2&&y", "/search", "q=%2F..%2F&x=1+2&&y"},
		{"/q?", "/q", ""},
		{"/q?a=/../b\\c;d", "/q", "a=/../b\\c;d"},
		{"/q?caf\xc3\xa9", "/q", "caf\xc3\xa9"},
	} {
		path, query, err := checkTarget(c.target)
		if err != nil {
			t.Errorf("%q refused: %v", c.target, err)
			continue
		}
		if path != c.path || query != c.query {
			t.Errorf("%q split into %q ? %q, want %q ? %q", c.target, path, query, c.path, c.query)
		}
	}
}

func TestCheckTargetRefuses(t *testing.T) {
	for _, c := range []struct{ name, target string }{
		{"empty", ""},
		{"asterisk", "*"},
		{"absolute form", "http://example.com/"},
		{"authority form", "example.com:443"},
		{"dot dot", "/a/../b"},
		{"dot dot at end", "/a/.."},
		{"dot", "/a/./b"},
		{"dot at end", "/a/."},
		{"leading dot dot", "/.."},
		{"double slash", "/a//b"},
		{"leading double slash", "//evil.example/x"},
		{"backslash", "/a\\b"},
		{"encoded slash", "/a%2fb"},
		{"encoded slash upper", "/a%2Fb"},
		{"encoded backslash", "/a%5cb"},
		{"encoded backslash upper", "/a%5Cb"},
		{"encoded dot", "/%2e%2e/admin"},
		{"encoded dot upper", "/%2E/admin"},
		{"encoded percent", "/a%252e%252e/b"},
		{"encoded semicolon", "/a%3bb"},
		{"semicolon", "/a;b"},
		{"tomcat dot dot", "/public/..;/admin"},
		{"encoded NUL", "/a%00b"},
		{"encoded control", "/a%0ab"},
		{"encoded DEL", "/a%7fb"},
		{"raw control", "/a\x01b"},
		{"raw DEL", "/a\x7fb"},
		{"raw tab", "/a\tb"},
		{"raw non-ASCII", "/caf\xc3\xa9"},
		{"invalid percent", "/a%zz"},
		{"truncated percent", "/a%4"},
		{"percent at end", "/a%"},
		{"overlong dot", "/%c0%ae%c0%ae/admin"},
		{"overlong slash", "/a%c0%afb"},
		{"not UTF-8", "/a%ffb"},
		{"C1 control", "/a%c2%85b"},
		{"fullwidth dots", "/%EF%BC%8E%EF%BC%8E/admin"},
		{"fullwidth solidus", "/a%EF%BC%8Fb"},
		{"two dot leader", "/%E2%80%A5/admin"},
		{"line separator", "/a%E2%80%A8b"},
		{"fragment", "/a#b"},
		{"fragment in query", "/a?b#c"},
		{"brace", "/a{b}"},
		{"pipe", "/a|b"},
		{"control in query", "/a?b\x00c"},
		{"DEL in query", "/a?b\x7f"},
	} {
		if path, query, err := checkTarget(c.target); err == nil {
			t.Errorf("%s: %q accepted as %q ? %q", c.name, c.target, path, query)
		}
	}
}

// TestLookalikesCoverNFKC checks the look-alike list against Unicode itself: every code point
// whose compatibility form is only dots or holds a separator or ';' is refused, encoded, in a path.
func TestLookalikesCoverNFKC(t *testing.T) {
	for r := rune(0x80); r <= utf8.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		n := norm.NFKC.String(string(r))
		if !strings.ContainsAny(n, "/\\;") && strings.Trim(n, ".") != "" {
			continue
		}
		target := "/a/" + url.PathEscape(string(r)) + "/b"
		if _, _, err := checkTarget(target); err == nil {
			t.Errorf("U+%04X (NFKC %q) accepted in %q", r, n, target)
		}
	}
}

// FuzzRequestTarget checks what the proxy promises about every target it accepts: it is split
// without loss, forwarded byte for byte, and names the same resource for a server that decodes
// it once, normalises it (dot segments, NFKC) or decodes it again.
func FuzzRequestTarget(f *testing.F) {
	for _, s := range []string{
		"/", "/a/b", "/a/../b", "/a/./b", "/a//b", "/a\\b", "/a%2fb", "/%2e%2e", "/a;b", "/..;/",
		"/a%00", "/a%zz", "/%c0%ae", "/%EF%BC%8E", "/q?x=1&y=%2F", "/q?", "http://x/", "*",
		"/caf%C3%A9", "/a%25", "/.well-known/x", "/a/b/", "/a/%E2%80%A5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		path, query, err := checkTarget(target)
		if err != nil {
			return
		}
		hasQuery := strings.Contains(target, "?")
		rebuilt := path
		if hasQuery {
			rebuilt += "?" + query
		}
		if rebuilt != target {
			t.Fatalf("%q split into %q ? %q", target, path, query)
		}

		u := forwardURL("http", "upstream.test:80", path, query, hasQuery && query == "")
		if got := u.RequestURI(); got != target {
			t.Fatalf("%q forwarded as %q", target, got)
		}
		var wire bytes.Buffer
		req := &nethttp.Request{Method: "GET", URL: u, Host: "upstream.test", Header: nethttp.Header{}, ProtoMajor: 1, ProtoMinor: 1}
		if err := req.Write(&wire); err != nil {
			t.Fatalf("%q: write request: %v", target, err)
		}
		line, _ := bufio.NewReader(&wire).ReadString('\n')
		if want := "GET " + target + " HTTP/1.1\r\n"; line != want {
			t.Fatalf("%q went on the wire as %q", target, line)
		}

		if !strings.HasPrefix(path, "/") || strings.Contains(path, "//") || strings.ContainsAny(path, "\\;") {
			t.Fatalf("%q accepted with path %q", target, path)
		}
		decoded, err := url.PathUnescape(path)
		if err != nil {
			t.Fatalf("%q accepted with invalid escapes: %v", target, err)
		}
		if strings.Contains(decoded, "%") {
			t.Fatalf("%q decodes to %q, which a second decoding would change", target, decoded)
		}
		for _, form := range []string{decoded, norm.NFKC.String(decoded)} {
			if strings.ContainsAny(form, "\\;") {
				t.Fatalf("%q decodes to %q", target, form)
			}
			for _, r := range form {
				if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
					t.Fatalf("%q decodes to a control character in %q", target, form)
				}
			}
			clean := pathpkg.Clean(form)
			if strings.HasSuffix(form, "/") && clean != "/" {
				clean += "/"
			}
			if clean != form {
				t.Fatalf("%q decodes to %q, which resolves to %q", target, form, clean)
			}
		}
	})
}
