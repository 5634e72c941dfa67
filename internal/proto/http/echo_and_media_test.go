package http

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"io"
	nethttp "net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/mask"
)

// echoCredentials are credentials whose secrets hold the characters encoders rewrite ('/', '+',
// '=', '.'), and the strings from which the agent could rebuild each (a Basic pair's base64
// without its padding decodes to the pair all the same).
var echoCredentials = []struct {
	name  string
	cred  Credential
	leaks []string
}{
	{"bearer", Credential{Header: "Authorization", Value: "Bearer prod.tok_8f2c/41d9+e7a0Zq=="},
		[]string{"prod.tok_8f2c/41d9+e7a0Zq"}},
	{"basic", Credential{Header: "Authorization", Value: "Basic " + base64.StdEncoding.EncodeToString([]byte("svc:prod-pass/9a8b+7c6d"))},
		[]string{"prod-pass/9a8b+7c6d", strings.TrimRight(base64.StdEncoding.EncodeToString([]byte("svc:prod-pass/9a8b+7c6d")), "=")}},
	{"api key", Credential{Header: "X-Api-Key", Value: "prod-key/1c0ffee2d+Q="},
		[]string{"prod-key/1c0ffee2d+Q"}},
}

// dotnetURLEncode is System.Web.HttpUtility.UrlEncode: lower-case hex, space as '+', and
// letters, digits and -_.!*() as they are.
func dotnetURLEncode(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		switch {
		case isAlnum(c) || strings.IndexByte("-_.!*()", c) >= 0:
			b.WriteByte(c)
		case c == ' ':
			b.WriteByte('+')
		default:
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

// pythonQuote is Python's urllib.parse.quote with its default safe="/": '/' stays, '+' and
// '=' are escaped.
func pythonQuote(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if isAlnum(c) || strings.IndexByte("_.-~/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// gsonString is a JSON string as Gson writes it by default: '<', '>', '&', '=' and '\” as
// \u escapes.
func gsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range []byte(s) {
		switch c {
		case '<', '>', '&', '=', '\'':
			fmt.Fprintf(&b, `\u%04x`, c)
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// esapiHTML is OWASP ESAPI's encodeForHTML: every character but letters, digits, ',', '.',
// '-', '_' and ' ' as a hexadecimal reference.
func esapiHTML(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if isAlnum(c) || strings.IndexByte(",.-_ ", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "&#x%x;", c)
		}
	}
	return b.String()
}

var htmlPage = template.Must(template.New("page").Parse(`<p>Your token {{.}} has expired.</p>`))

// agentReadings are the texts an agent could make of bytes by decoding them: percent-escapes
// (any case, nested), '+' as space, JSON escapes, HTML references, in any order, up to three
// layers deep.
func agentReadings(b []byte) []string {
	decoders := []func(string) string{
		func(s string) string { u, _ := url.QueryUnescape(lenientPercent(s)); return u },
		html.UnescapeString,
		jsonUnescape,
	}
	seen := map[string]bool{string(b): true}
	layer := []string{string(b)}
	for range 3 {
		var next []string
		for _, s := range layer {
			for _, d := range decoders {
				if out := d(s); !seen[out] {
					seen[out] = true
					next = append(next, out)
				}
			}
		}
		layer = next
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	return out
}

// lenientPercent drops the '%' of anything that is not an escape, so QueryUnescape decodes the
// rest of the text instead of failing on it.
func lenientPercent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && (i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2])) {
			b.WriteString("%25")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// jsonUnescape decodes the \u and two-character escapes of JSON strings wherever they are.
func jsonUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch c := s[i+1]; {
		case c == 'u' && i+5 < len(s):
			if v, err := strconv.ParseUint(s[i+2:i+6], 16, 16); err == nil {
				b.WriteRune(rune(v))
				i += 5
				continue
			}
			b.WriteByte(s[i])
		case strings.IndexByte(`"\/`, c) >= 0:
			b.WriteByte(c)
			i++
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// credentialLeak returns the secret an agent can rebuild from text, or "". Case is ignored: a
// service that upper-cases a hexadecimal token gives it away whole.
func credentialLeak(text []byte, leaks []string) string {
	for _, r := range agentReadings(text) {
		r = strings.ToLower(r)
		for _, leak := range leaks {
			if strings.Contains(r, strings.ToLower(leak)) {
				return leak
			}
		}
	}
	return ""
}

// TestCredentialEchoedInAnyEncodingOverwritten: a service that echoes the credential the proxy
// added, escaped the way real encoders escape it (.NET's lower-case percent-encoding, Python's
// quote that keeps '/', Gson's \u003d, Go's html/template &#43;, ESAPI's hex references, a token
// inside a URL inside a URL, upper case, a Basic pair's base64 without padding, a percent-encoded
// echo cut into 3-byte pieces of a streamed image), never hands it to the agent, masked or not.
func TestCredentialEchoedInAnyEncodingOverwritten(t *testing.T) {
	forms := []string{"dotnet-location", "dotnet-body", "python-quote", "gson", "html-template", "esapi", "nested-url", "upper", "unpadded", "stream-pieces"}
	reflect := func(w nethttp.ResponseWriter, r *nethttp.Request) {
		value := r.Header.Get("Authorization") + r.Header.Get("X-Api-Key")
		secret := value
		if _, after, ok := strings.Cut(value, " "); ok {
			secret = after
		}
		switch r.URL.Query().Get("form") {
		case "dotnet-location":
			w.Header().Set("Location", "/login?token="+dotnetURLEncode(secret))
			w.WriteHeader(302)
		case "dotnet-body":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "retry with /v1/session?auth="+dotnetURLEncode(value))
		case "python-quote":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"next":"/v1/items?token=`+pythonQuote(secret)+`"}`)
		case "gson":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"debug":{"authorization":`+gsonString(value)+`}}`)
		case "html-template":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			htmlPage.Execute(w, secret)
		case "esapi":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<pre>"+esapiHTML(value)+"</pre>")
		case "nested-url":
			w.Header().Set("Location", "/sso?next="+url.QueryEscape("/callback?token="+url.QueryEscape(secret)))
			w.WriteHeader(303)
		case "upper":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "TOKEN "+strings.ToUpper(secret)+" REVOKED")
		case "unpadded":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"seen":"`+strings.TrimRight(secret, "=")+`"}`)
		case "stream-pieces":
			w.Header().Set("Content-Type", "image/png")
			data := pngStart + "....auth=" + dotnetURLEncode(value) + "...." + pngStart
			for i := 0; i < len(data); i += 3 {
				io.WriteString(w, data[i:min(i+3, len(data))])
				w.(nethttp.Flusher).Flush()
			}
		}
	}
	up := startUpstream(t, reflect)
	for _, cr := range echoCredentials {
		for _, masked := range []bool{false, true} {
			for _, form := range forms {
				t.Run(fmt.Sprintf("%s/masked=%v/%s", cr.name, masked, form), func(t *testing.T) {
					hook, conn := credentialProxy(t, up.addr(), cr.cred, masked)
					conn.send(t, "GET /echo?form="+form+" HTTP/1.1\r\nHost: api.test\r\n\r\n")
					resp, body := conn.response(t, "GET")
					var got bytes.Buffer
					resp.Header.Write(&got)
					got.Write(body)
					if leak := credentialLeak(got.Bytes(), cr.leaks); leak != "" {
						t.Errorf("the agent can read the credential %q in:\n%s", leak, got.Bytes())
					}
					e := hook.waitExchanges(t, 1)[0]
					if leak := credentialLeak(e.Body, cr.leaks); leak != "" {
						t.Errorf("the record holds the credential %q: %q", leak, e.Body)
					}
					if !e.Masked {
						t.Error("the echo was overwritten but the exchange is not recorded as masked")
					}
					if resp.StatusCode/100 != 2 && resp.StatusCode/100 != 3 {
						t.Errorf("status %d: %q", resp.StatusCode, body)
					}
					if n, err := strconv.Atoi(resp.Header.Get("Content-Length")); err == nil && n != len(body) {
						t.Errorf("Content-Length %d for a body of %d bytes", n, len(body))
					}
				})
			}
		}
	}
}

// TestEchoFilterEncodedFormsAcrossPieces: the filter finds an encoded echo wherever a stream's
// pieces cut it, keeps the body's length, holds back no more than the start of a possible echo,
// and passes ordinary text (with escapes, references and percent signs of its own) unchanged.
func TestEchoFilterEncodedFormsAcrossPieces(t *testing.T) {
	cred := &Credential{Header: "Authorization", Value: "Bearer prod.tok_8f2c/41d9+e7a0Zq=="}
	leaks := []string{"prod.tok_8f2c/41d9+e7a0Zq"}
	secret := "prod.tok_8f2c/41d9+e7a0Zq=="
	echoes := []string{
		"x " + dotnetURLEncode(secret) + " y",
		`{"t":` + gsonString(cred.Value) + `}`,
		"<p>" + esapiHTML(secret) + "</p>",
		"next=" + url.QueryEscape("/cb?token="+url.QueryEscape(secret)),
		"T=" + strings.ToUpper(secret),
		"p=" + pythonQuote(secret) + "&q=1",
	}
	for _, body := range echoes {
		for cut := 0; cut <= len(body); cut++ {
			f := newEchoFilter(cred)
			var got []byte
			got = append(got, f.filter([]byte(body[:cut]))...)
			got = append(got, f.filter([]byte(body[cut:]))...)
			got = append(got, f.rest()...)
			if len(got) != len(body) {
				t.Fatalf("%q cut at %d: %d bytes out for %d in", body, cut, len(got), len(body))
			}
			if leak := credentialLeak(got, leaks); leak != "" {
				t.Fatalf("%q cut at %d: %q", body, cut, got)
			}
		}
	}
	ordinary := []string{
		"data: {\"n\": 1}\n\n",
		`{"path":"C:\\tmp\\x","pct":"100%","q":"a=1&b=2","html":"&amp; &#43; &lt;p&gt;"}` + "\n",
		"GET /v1/items?cursor=prod%2Etok HTTP/1.1\n",
	}
	for _, piece := range ordinary {
		f := newEchoFilter(cred)
		if out := f.filter([]byte(piece)); string(out) != piece {
			t.Errorf("%q came out as %q (held back %q)", piece, out, f.rest())
		}
	}
}

// TestMaskedMediaLabelsLeakNothing: with masking on, a body labelled as an image or a video
// passes unmasked only when its bytes begin as media. Data under a media label (a label an object
// store lets the agent choose with response-content-type, or a stored file's own) is masked
// or withheld: anything in a coding the proxy does not decode, even real media; a gzip, zip, 7z,
// xz, zstd or SQLite file; compressed text without a magic number (brotli, raw deflate);
// records with binary fields (protobuf, BSON, MessagePack). Real media of every common format,
// gzip-encoded or not, still pass.
func TestMaskedMediaLabelsLeakNothing(t *testing.T) {
	binaryTail := "\x00\x01\x02\x03\xfe\xff" + strings.Repeat("\x10\x9c\x00", 40)
	doc := strings.Repeat(exportCSV, 20)
	protobuf := strings.Repeat("\x09\x07\x00\x00\x00\x00\x00\x00\x00"+ // a fixed64 id: NULs first
		"\x12"+string(rune(len(testEmail)))+testEmail+"\x1a"+string(rune(len(testCard)))+testCard, 20)
	bson := "\x3c\x00\x00\x00\x02email\x00\x10\x00\x00\x00" + testEmail + "\x00\x02card\x00\x14\x00\x00\x00" + testCard + "\x00\x00"
	msgpack := "\x83\xa2id\xcf\x00\x00\x00\x00\x00\x00\x00\x07\xa5email\xaf" + testEmail + "\xa4card\xb3" + testCard
	mpegTS := strings.Repeat("\x47\x40\x00\x10"+strings.Repeat("\xff", 184), 3)
	cases := []struct {
		name, contentType, encoding string
		body                        func(t *testing.T) string
		want                        int // 200: passed as it is; 502: withheld
	}{
		{"CSV under image/png with deflate", "image/png", "deflate", bodyOf(exportCSV), 502},
		{"CSV under image/png with br", "image/png", "br", bodyOf(exportCSV), 502},
		{"CSV under video/mp4 with zstd", "video/mp4", "zstd", bodyOf(exportCSV), 502},
		{"gzip file under image/png", "image/png", "", func(t *testing.T) string { return gzipped(t, exportCSV) }, 502},
		{"zip file under image/jpeg", "image/jpeg", "", func(t *testing.T) string { return string(zipped(t, "c.csv", exportCSV)) }, 502},
		{"7z under audio/mpeg", "audio/mpeg", "", bodyOf("7z\xbc\xaf\x27\x1c" + binaryTail), 502},
		{"xz under image/webp", "image/webp", "", bodyOf("\xfd7zXZ\x00" + binaryTail), 502},
		{"zstd under image/gif", "image/gif", "", bodyOf("\x28\xb5\x2f\xfd" + binaryTail), 502},
		{"bzip2 under image/png", "image/png", "", bodyOf("BZh91AY&SY" + binaryTail), 502},
		{"SQLite under font/woff2", "font/woff2", "", bodyOf("SQLite format 3\x00" + binaryTail), 502},
		{"brotli CSV under image/png with br", "image/png", "br", bodyOf(brotliStored(doc)), 502},
		{"raw deflate CSV under image/png with deflate", "image/png", "deflate", bodyOf(rawDeflateBytes(t, doc)), 502},
		{"a brotli file under image/png", "image/png", "", bodyOf(brotliStored(doc)), 502},
		{"a raw deflate file under image/png", "image/png", "", bodyOf(rawDeflateBytes(t, doc)), 502},
		{"protobuf with a fixed64 first under image/png", "image/png", "", bodyOf(protobuf), 502},
		{"BSON under image/jpeg", "image/jpeg", "", bodyOf(bson), 502},
		{"MessagePack under video/mp4", "video/mp4", "", bodyOf(msgpack), 502},
		{"no known media under image/png", "image/png", "", bodyOf(binaryTail), 502},
		{"PNG with a br coding", "image/png", "br", bodyOf(pngStart + binaryTail), 502},
		{"BMP header without its fields", "image/bmp", "", bodyOf("BM" + binaryTail), 502},
		{"PNG", "image/png", "", bodyOf(pngStart + binaryTail), 200},
		{"gzip-encoded PNG", "image/png", "gzip", bodyOf(pngStart + binaryTail), 200},
		{"JPEG", "image/jpeg", "", bodyOf("\xff\xd8\xff\xe0\x00\x10JFIF\x00" + binaryTail), 200},
		{"TIFF", "image/tiff", "", bodyOf("II*\x00\x08\x00\x00\x00" + binaryTail), 200},
		{"HEIC", "image/heic", "", bodyOf("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + binaryTail), 200},
		{"FLAC", "audio/flac", "", bodyOf("fLaC\x00\x00\x00\x22" + binaryTail), 200},
		{"MP3 without a tag", "audio/mpeg", "", bodyOf("\xff\xfb\x90\x64" + binaryTail), 200},
		{"MP3 with a tag", "audio/mpeg", "", bodyOf("ID3\x04\x00\x00\x00\x00\x00\x00" + binaryTail), 200},
		{"AAC", "audio/aac", "", bodyOf("\xff\xf1\x50\x80\x2e\x7f\xfc" + binaryTail), 200},
		{"GIF", "image/gif", "", bodyOf("GIF89a\x01\x00\x01\x00" + binaryTail), 200},
		{"WebP", "image/webp", "", bodyOf("RIFF\x24\x00\x00\x00WEBPVP8 " + binaryTail), 200},
		{"BMP", "image/bmp", "", bodyOf("BM\x36\x00\x0c\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00" + binaryTail), 200},
		{"ICO", "image/x-icon", "", bodyOf("\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00" + binaryTail), 200},
		{"AVIF", "image/avif", "", bodyOf("\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + binaryTail), 200},
		{"MP4", "video/mp4", "", bodyOf("\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + binaryTail), 200},
		{"WebM", "video/webm", "", bodyOf("\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + binaryTail), 200},
		{"MPEG transport stream", "video/mp2t", "", bodyOf(mpegTS), 200},
		{"Ogg", "audio/ogg", "", bodyOf("OggS\x00\x02" + binaryTail), 200},
		{"WAVE", "audio/wav", "", bodyOf("RIFF\x24\x08\x00\x00WAVEfmt " + binaryTail), 200},
		{"WOFF2", "font/woff2", "", bodyOf("wOF2\x00\x01\x00\x00" + binaryTail), 200},
		{"TrueType", "font/ttf", "", bodyOf("\x00\x01\x00\x00\x00\x0a\x00\x80\x00\x03\x00\x20" + binaryTail), 200},
		{"PDF", "application/pdf", "", bodyOf("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + binaryTail), 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := c.body(t)
			up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
				w.Header().Set("Content-Type", c.contentType)
				sent := body
				if c.encoding != "" {
					w.Header().Set("Content-Encoding", c.encoding)
					if c.encoding == "gzip" {
						sent = gzipped(t, body)
					}
				}
				io.WriteString(w, sent)
			})
			hook := newFakeHook()
			hook.masker = testPlan(t)
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, "GET /v1/files/1?response-content-type="+url.QueryEscape(c.contentType)+" HTTP/1.1\r\nHost: api.test\r\n\r\n")
			resp, got := conn.response(t, "GET")
			if what := leaked(got); what != "" {
				t.Errorf("the agent got %s (status %d)", what, resp.StatusCode)
			}
			if resp.StatusCode != c.want {
				t.Errorf("status %d, want %d: %q", resp.StatusCode, c.want, got[:min(len(got), 120)])
			}
			if c.want == 200 && string(got) != body {
				t.Errorf("media changed on the way: %q", got[:min(len(got), 120)])
			}
			if c.want == 502 {
				if msg, _ := errorBody(t, resp, got); !strings.Contains(msg, "mask") {
					t.Errorf("the 502 does not say masking is why: %q", msg)
				}
			}
		})
	}
}

func bodyOf(s string) func(*testing.T) string { return func(*testing.T) string { return s } }

// brotliStored is s as a brotli stream of one uncompressed meta-block (RFC 7932 §9.2): WBITS 16,
// not last, four nibbles of MLEN-1, uncompressed; s; then an empty last meta-block. What any
// brotli decoder reads as s, with no byte of it compressed.
func brotliStored(s string) string {
	n := len(s) - 1 // at most 1<<16 - 1
	head := []byte{byte(n&0xf) << 4, byte(n >> 4), byte(n>>12&0xf) | 0x10}
	return string(head) + s + "\x03"
}

// TestRealAPIResponsesPassMasked: with masking on, what ordinary APIs answer keeps working:
// JSON with a charset in any spelling, a BOM, problem+json, Latin-1 HTML, chunked JSON without a
// length, gzip images, 204 and 304 with their fields, and an image larger than the masking limit
// (media streams; only what is masked is bounded).
func TestRealAPIResponsesPassMasked(t *testing.T) {
	doc := `{"id":7,"email":"` + testEmail + `"}`
	maskedDoc := `{"id":7,"email":"[REDACTED:email]"}`
	bigImage := pngStart + strings.Repeat("\x00\x10\x20\xff", (3<<20)/4)
	cases := []struct {
		name, contentType, encoding, body string
		chunked                           bool
		status                            int
		want                              string // the body the agent must get
	}{
		{"JSON charset=utf-8", "application/json; charset=utf-8", "", doc, false, 200, maskedDoc},
		{"JSON quoted charset", `application/json; charset="utf-8"`, "", doc, false, 200, maskedDoc},
		{"JSON charset=UTF8", "application/json;charset=UTF8", "", doc, false, 200, maskedDoc},
		{"JSON charset with odd spacing", "application/json ;  Charset = utf-8 ", "", doc, false, 200, maskedDoc},
		{"JSON with a UTF-8 BOM", "application/json", "", "\xef\xbb\xbf" + doc, false, 200, "\xef\xbb\xbf" + maskedDoc},
		{"problem+json", "application/problem+json", "", doc, false, 200, maskedDoc},
		{"Latin-1 HTML", "text/html; charset=ISO-8859-1", "", "<p>caf\xe9 " + testEmail + "</p>", false, 200, "<p>caf\xe9 [REDACTED:email]</p>"},
		{"chunked JSON without a length", "application/json", "", doc, true, 200, maskedDoc},
		{"gzip image", "image/png", "gzip", pngStart + "\x00pixels", false, 200, pngStart + "\x00pixels"},
		{"image over the masking limit", "image/png", "", bigImage, true, 200, bigImage},
		{"204 with fields", "application/json", "", "", false, 204, ""},
		{"304 with fields", "application/json", "", "", false, 304, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
				w.Header().Set("Content-Type", c.contentType)
				w.Header().Set("ETag", `"v7"`)
				body := c.body
				if c.encoding != "" {
					w.Header().Set("Content-Encoding", c.encoding)
					body = gzipped(t, body)
				}
				if !c.chunked && c.status == 200 {
					w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				}
				w.WriteHeader(c.status)
				if c.chunked {
					half := len(body) / 2
					io.WriteString(w, body[:half])
					w.(nethttp.Flusher).Flush()
					io.WriteString(w, body[half:])
					return
				}
				io.WriteString(w, body)
			})
			hook := newFakeHook()
			hook.masker = testPlan(t)
			p := startProxy(t, &Server{MaxMaskedBody: 1 << 20}, Upstream{Addr: up.addr()}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, "GET /v1/customers/7 HTTP/1.1\r\nHost: api.test\r\n\r\n")
			resp, got := conn.response(t, "GET")
			if resp.StatusCode != c.status || string(got) != c.want {
				t.Errorf("status %d, body %q; want %d, %q", resp.StatusCode, got[:min(len(got), 200)], c.status, c.want[:min(len(c.want), 200)])
			}
			if resp.Header.Get("ETag") != `"v7"` {
				t.Errorf("ETag %q lost", resp.Header.Get("ETag"))
			}
		})
	}
}

// watchClient sends a GET and, once the upstream sent first (a watch's head goes out with its
// first value: before it, the proxy cannot tell a watch from a document), reads the head.
func watchClient(t *testing.T, up *lineStreamer, addr, path, first string) (*nethttp.Response, *bufio.Reader) {
	t.Helper()
	conn := dialRaw(t, addr)
	conn.send(t, "GET "+path+" HTTP/1.1\r\nHost: api.test\r\n\r\n")
	up.send(t, first)
	resp, err := nethttp.ReadResponse(conn.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// TestJSONWatchStreamsMasked: a JSON body of unknown length whose lines are whole JSON values
// (a Kubernetes or Docker watch: Content-Type application/json, chunked, endless) reaches the
// agent event by event, masked, instead of being held until the upstream ends it.
func TestJSONWatchStreamsMasked(t *testing.T) {
	up := startLineStreamer(t, "application/json")
	hook := newFakeHook()
	hook.masker = testPlan(t)
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	event := func(i int, typ string) string {
		return fmt.Sprintf(`{"type":%q,"object":{"metadata":{"name":"p%d"},"owner":%q}}`, typ, i, testEmail) + "\n"
	}
	resp, body := watchClient(t, up, p.addr, "/api/v1/pods?watch=1", event(0, "ADDED"))
	if resp.StatusCode != 200 || resp.ContentLength >= 0 {
		t.Fatalf("status %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	for i, typ := range []string{"ADDED", "MODIFIED", "DELETED"} {
		if i > 0 {
			up.send(t, event(i, typ))
		}
		got := readLineWithin(t, body)
		if strings.Contains(got, testEmail) || !strings.Contains(got, `"type":"`+typ+`"`) {
			t.Fatalf("event %d: got %q", i, got)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(got), &v); err != nil {
			t.Fatalf("event %d is no longer JSON: %q", i, got)
		}
	}
	up.send(t, "")
	if rest, err := io.ReadAll(body); err != nil || len(rest) != 0 {
		t.Errorf("end of stream: %q, %v", rest, err)
	}
	if e := hook.waitExchanges(t, 1)[0]; !e.Masked || e.Err != nil {
		t.Errorf("recorded Masked=%v Err=%v", e.Masked, e.Err)
	}
}

// TestJSONStreamThatIsNotLinesCut: once a JSON body streams line by line, a line that is not a
// whole JSON value (a value split over lines, whose key would be the detectors' context) is not
// passed: the stream is cut before it.
func TestJSONStreamThatIsNotLinesCut(t *testing.T) {
	up := startLineStreamer(t, "application/json")
	hook := newFakeHook()
	hook.masker = testPlan(t)
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	_, body := watchClient(t, up, p.addr, "/events", `{"type":"ADDED"}`+"\n")
	if got := readLineWithin(t, body); got != `{"type":"ADDED"}`+"\n" {
		t.Fatalf("first event: %q", got)
	}
	up.send(t, `{"ssn":`+"\n"+`"536-22-8726"}`+"\n")
	rest, err := io.ReadAll(body)
	if err == nil || strings.Contains(string(rest), "536-22-8726") || strings.Contains(string(rest), "ssn") {
		t.Errorf("after a line that is not JSON: %q, %v", rest, err)
	}
	if e := hook.waitExchanges(t, 1)[0]; e.Err == nil {
		t.Error("no error recorded for the cut stream")
	}
}

// TestJSONDocumentsStillWhole: JSON documents that are not watches keep their Content-Length
// and are masked whole: pretty-printed (its first line is not a value), chunked or not.
func TestJSONDocumentsStillWhole(t *testing.T) {
	pretty := "{\n  \"ssn\":\n    \"536-22-8726\",\n  \"email\": \"" + testEmail + "\"\n}\n"
	for _, chunked := range []bool{false, true} {
		t.Run("chunked="+strconv.FormatBool(chunked), func(t *testing.T) {
			up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
				w.Header().Set("Content-Type", "application/json")
				if !chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(pretty)))
				}
				for line := range strings.SplitAfterSeq(pretty, "\n") {
					io.WriteString(w, line)
					w.(nethttp.Flusher).Flush()
				}
			})
			hook := newFakeHook()
			hook.masker = testPlan(t)
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, "GET /doc HTTP/1.1\r\nHost: api.test\r\n\r\n")
			resp, got := conn.response(t, "GET")
			if leaked(got) != "" || strings.Contains(string(got), "536-22-8726") {
				t.Errorf("unmasked: %q", got)
			}
			if resp.Header.Get("Content-Length") != strconv.Itoa(len(got)) {
				t.Errorf("Content-Length %q for %d bytes", resp.Header.Get("Content-Length"), len(got))
			}
		})
	}
}

// TestMaskedBuffersShareTheBudget: a body buffered to be masked is held in memory, so it takes
// from the Server's budget like a request body does: an agent that asks for many large
// documents at once over many connections gets 503 for those past the budget instead of
// making the daemon hold each of them (and its masked copy). The budget is given back when the
// response is sent.
func TestMaskedBuffersShareTheBudget(t *testing.T) {
	const size = 1 << 20
	doc := `{"pad":"` + strings.Repeat("x", size-32) + `","e":"` + testEmail + `"}`
	release := make(chan struct{})
	up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
		io.WriteString(w, doc[:100])
		w.(nethttp.Flusher).Flush()
		if r.URL.Path == "/held" {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, doc[100:])
	})
	hook := newFakeHook()
	hook.masker = testPlan(t)
	srv := &Server{MaxMaskedBody: 2 * size, MaxBufferedBodies: 3 * size}
	p := startProxy(t, srv, Upstream{Addr: up.addr()}, hook)

	held := dialRaw(t, p.addr)
	held.send(t, "GET /held HTTP/1.1\r\nHost: api.test\r\n\r\n")
	deadline := time.Now().Add(waitLimit)
	for srv.bodiesInUse() < size {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("a masked body of %d bytes being read holds %d bytes of the budget", len(doc), srv.bodiesInUse())
		}
		time.Sleep(5 * time.Millisecond)
	}
	other := dialRaw(t, p.addr)
	other.send(t, "GET /other HTTP/1.1\r\nHost: api.test\r\n\r\n")
	resp, body := other.response(t, "GET")
	if resp.StatusCode != 503 || leaked(body) != "" {
		t.Errorf("past the budget: status %d, %d bytes, want 503", resp.StatusCode, len(body))
	}
	close(release)
	resp, body = held.response(t, "GET")
	if resp.StatusCode != 200 || len(body) < size || leaked(body) != "" {
		t.Errorf("within the budget: status %d, %d bytes", resp.StatusCode, len(body))
	}
	hook.waitExchanges(t, 2)
	// The budget is given back once the exchange is recorded, just after the hook hears of it.
	for deadline := time.Now().Add(waitLimit); srv.bodiesInUse() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes of the budget still taken after both responses", srv.bodiesInUse())
		}
	}
	// Within the budget again, the same request passes.
	other.send(t, "GET /other HTTP/1.1\r\nHost: api.test\r\n\r\n")
	if resp, body := other.response(t, "GET"); resp.StatusCode != 200 || leaked(body) != "" {
		t.Errorf("after the budget was given back: status %d", resp.StatusCode)
	}
}

// TestBodilessAnswersDescribeWhatAGetGets: a HEAD and a 304 describe the body a GET would get
// through the proxy: when the proxy decodes a gzip body (to mask it, or to overwrite an echoed
// credential), a HEAD or a 304 must not claim gzip (a cache would apply a 304's fields to the
// decoded body it stored) nor the compressed length.
func TestBodilessAnswersDescribeWhatAGetGets(t *testing.T) {
	doc := `{"id":7,"note":"` + strings.Repeat("a", 200) + `"}`
	zipped := gzipped(t, doc)
	up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("ETag", `"v7"`)
		if r.Header.Get("If-None-Match") == `"v7"` {
			w.WriteHeader(304)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(zipped)))
		if r.Method != "HEAD" {
			io.WriteString(w, zipped)
		}
	})
	for _, c := range []struct {
		name   string
		masked bool
		cred   *Credential
	}{
		{"masked", true, nil},
		{"credential", false, &Credential{Header: "X-Api-Key", Value: "prod-key-1c0ffee2d"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			hook := newFakeHook()
			if c.masked {
				hook.masker = testPlan(t)
			}
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr(), Credential: c.cred}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, "GET /doc HTTP/1.1\r\nHost: api.test\r\n\r\n")
			getResp, getBody := conn.response(t, "GET")
			if getResp.Header.Get("Content-Encoding") != "" || string(getBody) != doc {
				t.Fatalf("GET: Content-Encoding %q, body %q", getResp.Header.Get("Content-Encoding"), getBody)
			}
			for _, req := range []struct{ method, extra string }{{"HEAD", ""}, {"GET", "If-None-Match: \"v7\"\r\n"}} {
				conn.send(t, req.method+" /doc HTTP/1.1\r\nHost: api.test\r\n"+req.extra+"\r\n")
				resp, _ := conn.response(t, req.method)
				if enc := resp.Header.Get("Content-Encoding"); enc != "" {
					t.Errorf("%s %s: Content-Encoding %q, but a GET gets the body decoded", req.method, req.extra, enc)
				}
				if n := resp.Header.Get("Content-Length"); n != "" && n != strconv.Itoa(len(getBody)) {
					t.Errorf("%s: Content-Length %s, but a GET gets %d bytes", req.method, n, len(getBody))
				}
			}
		})
	}
}

// TestEchoOverwritesEverySecretPart: what is left of an echo is never part of the secret: a
// Bearer or Basic scheme and a Basic user name may stay, a header credential's words may not,
// and a Basic password too short to look for alone is overwritten with its user name.
func TestEchoOverwritesEverySecretPart(t *testing.T) {
	for _, c := range []struct {
		cred       Credential
		echo, want string
	}{
		{Credential{Header: "Authorization", Value: "Bearer tok-8f2c41d9e7a0"}, "got Bearer tok-8f2c41d9e7a0.", "got Bearer ****************."},
		{Credential{Header: "X-Auth", Value: "k3y-one s3cret-two"}, "got k3y-one s3cret-two.", "got ******************."},
		{Credential{Header: "Authorization", Value: "Basic " + base64.StdEncoding.EncodeToString([]byte("svc-user:pw1"))}, "as svc-user:pw1.", "as ************."},
		{Credential{Header: "Authorization", Value: "Basic " + base64.StdEncoding.EncodeToString([]byte("svc:password-9a8b"))}, "as svc:password-9a8b.", "as svc:" + strings.Repeat("*", len("password-9a8b")) + "."},
	} {
		f := newEchoFilter(&c.cred)
		got := string(append(f.filter([]byte(c.echo)), f.rest()...))
		if got != c.want {
			t.Errorf("%s: %q came out as %q, want %q", c.cred.Header, c.echo, got, c.want)
		}
	}
}

// TestEchoFilterStopsAtTheStartOfAnEcho: a piece is held back only from where an echo could
// begin, however the service escapes: the rest goes out at once.
func TestEchoFilterStopsAtTheStartOfAnEcho(t *testing.T) {
	f := newEchoFilter(&Credential{Header: "X-Api-Key", Value: "prod-key/1c0ffee2d+Q="})
	for _, c := range []struct{ in, out string }{
		{"event 1\nauth=prod-key%2f1c", "event 1\nauth="},
		{"0ffee2d%2bQ%3d done\n", strings.Repeat("*", len("prod-key%2f1c0ffee2d%2bQ%3d")) + " done\n"},
		{"ok &#x70;&#x72", "ok "},
		{"od-key nothing\n", "&#x70;&#x72od-key nothing\n"},
	} {
		if got := string(f.filter([]byte(c.in))); got != c.out {
			t.Errorf("%q: sent %q, want %q", c.in, got, c.out)
		}
	}
}

// BenchmarkEchoFilter: the cost of looking for the credential in every byte of a response, on
// a 32 KiB JSON piece dense with escapes, on 32 KiB of media bytes, on a stream of short event
// lines, and of preparing the search for a response.
func BenchmarkEchoFilter(b *testing.B) {
	cred := &Credential{Header: "Authorization", Value: "Bearer prod.tok_8f2c/41d9+e7a0Zq=="}
	piece := []byte(strings.Repeat(`{"id":12345,"url":"https:\/\/api.test\/v1\/a%20b?x=1&y=2","html":"&amp;","email":"someone@example.com"},`, 300))[:32<<10]
	line := []byte(`data: {"delta":"some words of a completion, streamed"}` + "\n")
	b.Run("json-32KiB", func(b *testing.B) {
		f := newEchoFilter(cred)
		b.SetBytes(int64(len(piece)))
		for b.Loop() {
			f.filter(piece)
		}
	})
	b.Run("binary-32KiB", func(b *testing.B) {
		f := newEchoFilter(cred)
		media := make([]byte, 32<<10)
		for i := range media {
			media[i] = byte(i*7919 + i>>8) // every byte value, in no order
		}
		b.SetBytes(int64(len(media)))
		for b.Loop() {
			f.filter(media)
		}
	})
	b.Run("event-lines", func(b *testing.B) {
		f := newEchoFilter(cred)
		b.SetBytes(int64(len(line)))
		for b.Loop() {
			f.filter(line)
		}
	})
	b.Run("setup-per-response", func(b *testing.B) {
		for b.Loop() {
			newEchoFilter(cred)
		}
	})
}

// TestEchoInGzipOfUnknownLengthToHTTP10: an HTTP/1.0 client (no chunking) gets a decoded,
// filtered body delimited by the end of the connection, the echo overwritten, the body whole.
func TestEchoInGzipOfUnknownLengthToHTTP10(t *testing.T) {
	secret := "prod-key/1c0ffee2d+Q="
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	io.WriteString(zw, "token="+dotnetURLEncode(secret)+" end")
	zw.Close()
	addr := rawUpstream(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n"+zb.String())
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: addr, Credential: &Credential{Header: "X-Api-Key", Value: secret}}, hook)
	conn := dialRaw(t, p.addr)
	conn.send(t, "GET /x HTTP/1.0\r\nHost: api.test\r\n\r\n")
	resp, body := conn.response(t, "GET")
	want := "token=" + strings.Repeat("*", len(dotnetURLEncode(secret))) + " end"
	if resp.StatusCode != 200 || string(body) != want {
		t.Errorf("status %d, body %q, want %q", resp.StatusCode, body, want)
	}
}

// BenchmarkMaskHeader: masking the fields of a typical API response, which every masked
// response pays (compare with BenchmarkProxy's masked-µs/req).
func BenchmarkMaskHeader(b *testing.B) {
	plan, err := mask.NewPlan(nil, mask.Config{})
	if err != nil {
		b.Fatal(err)
	}
	upstream := nethttp.Header{
		"Content-Type":  {"application/json; charset=utf-8"},
		"Date":          {"Mon, 07 Dec 2026 07:36:34 GMT"},
		"Etag":          {`W/"5e1-8fJbX1tRj0m6Yk2s"`},
		"Cache-Control": {"private, max-age=0, must-revalidate"},
		"Vary":          {"Accept, Accept-Encoding, Authorization"},
		"X-Request-Id":  {"9f1c2b7e-5d3a-4c1e-8b2f-0a6d4e3c2b1a"},
		"Link":          {`</v1/customers?page=3>; rel="next", </v1/customers?page=1>; rel="prev"`},
		"Set-Cookie":    {"lb=7f3a; Path=/; HttpOnly; Secure; SameSite=Lax"},
	}
	for b.Loop() {
		h := upstream.Clone()
		if _, err := maskHeader(plan, h); err != nil {
			b.Fatal(err)
		}
	}
}
