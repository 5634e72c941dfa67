package http

import (
	"bufio"
	"fmt"
	"io"
	nethttp "net/http"
	"strings"
	"testing"
	"time"
)

// lineStreamer is an upstream that sends lines one at a time, each only when the test says so.
type lineStreamer struct {
	*upstreamFixture
	next chan string // a line to send, or "" to end the response
}

func startLineStreamer(t *testing.T, contentType string) *lineStreamer {
	ls := &lineStreamer{next: make(chan string)}
	ls.upstreamFixture = startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(200)
		w.(nethttp.Flusher).Flush()
		for {
			select {
			case line := <-ls.next:
				if line == "" {
					return
				}
				io.WriteString(w, line)
				w.(nethttp.Flusher).Flush()
			case <-r.Context().Done():
				return
			case <-ls.release:
				return
			}
		}
	})
	return ls
}

func (ls *lineStreamer) send(t *testing.T, line string) {
	t.Helper()
	select {
	case ls.next <- line:
	case <-time.After(waitLimit):
		t.Fatal("the upstream handler is not running")
	}
}

// streamClient reads a streamed response line by line with a deadline on every read, so a
// proxy that buffers what it should stream fails the test instead of hanging it.
func streamClient(t *testing.T, addr, path string) (*nethttp.Response, *bufio.Reader) {
	return streamClientProto(t, addr, path, "HTTP/1.1")
}

func streamClientProto(t *testing.T, addr, path, proto string) (*nethttp.Response, *bufio.Reader) {
	t.Helper()
	conn := dialRaw(t, addr)
	conn.send(t, "GET "+path+" "+proto+"\r\nHost: api.test\r\n\r\n")
	resp, err := nethttp.ReadResponse(conn.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

func readLineWithin(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read line: %v (got %q)", err, line)
	}
	return line
}

// TestEventStreamStreamsMasked: each event reaches the client, masked, before the upstream
// sends the next (the upstream sends the second only once the client has the first).
func TestEventStreamStreamsMasked(t *testing.T) {
	for _, c := range []struct {
		name, contentType string
		lines             []string
	}{
		{"text/event-stream", "text/event-stream", []string{
			"event: message\n",
			`data: {"email":"` + testEmail + `","n":1}` + "\n",
			"\n",
			"data: paid with " + testCard + "\r\n",
			"\r\n",
		}},
		{"application/x-ndjson", "application/x-ndjson", []string{
			`{"email":"` + testEmail + `"}` + "\n",
			`{"card":"` + testCard + `"}` + "\n",
			"not json: " + testEmail + "\n",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := startLineStreamer(t, c.contentType)
			hook := newFakeHook()
			hook.masker = testPlan(t)
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
			resp, body := streamClient(t, p.addr, "/events")
			if resp.StatusCode != 200 || resp.ContentLength != -1 {
				t.Fatalf("status %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
			}
			var got strings.Builder
			for _, line := range c.lines {
				up.send(t, line)
				out := readLineWithin(t, body)
				if strings.Contains(out, testEmail) || strings.Contains(out, testCard) {
					t.Errorf("line %q passed as %q", line, out)
				}
				if strings.HasSuffix(line, "\r\n") != strings.HasSuffix(out, "\r\n") {
					t.Errorf("line end changed: %q → %q", line, out)
				}
				got.WriteString(out)
			}
			up.send(t, "")
			if rest, err := io.ReadAll(body); err != nil || len(rest) != 0 {
				t.Errorf("after the last line: %q, %v", rest, err)
			}
			e := hook.waitExchanges(t, 1)[0]
			if !e.Masked || e.Err != nil || string(e.Body) != got.String() || e.BodyBytes != int64(got.Len()) {
				t.Errorf("recorded masked=%v err=%v body %q (%d bytes), client got %q", e.Masked, e.Err, e.Body, e.BodyBytes, got.String())
			}
		})
	}
}

// TestStreamCutOnFailure: once a stream has started, a line that cannot be masked, or one longer
// than MaxMaskedBody, ends the connection with a reset: the client sees an error, not an end.
func TestStreamCutOnFailure(t *testing.T) {
	for _, c := range []struct {
		name   string
		proto  string
		masker Masker
		bad    string
	}{
		{"masking fails", "HTTP/1.1", failingMasker{onlyMarked: true}, "data: fail here\n"},
		{"line over the limit", "HTTP/1.1", nil, "data: " + strings.Repeat("x", 2<<10) + "\n"},
		// No chunked framing for HTTP/1.0: the end of the connection ends the body, so only a
		// reset tells the client the body was cut.
		{"masking fails, HTTP/1.0", "HTTP/1.0", failingMasker{onlyMarked: true}, "data: fail here\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := startLineStreamer(t, "text/event-stream")
			hook := newFakeHook()
			hook.masker = c.masker
			if hook.masker == nil {
				hook.masker = testPlan(t)
			}
			p := startProxy(t, &Server{MaxMaskedBody: 1 << 10}, Upstream{Addr: up.addr()}, hook)
			_, body := streamClientProto(t, p.addr, "/events", c.proto)
			up.send(t, "data: first\n")
			if got := readLineWithin(t, body); got != "data: first\n" {
				t.Fatalf("first line %q", got)
			}
			up.send(t, c.bad)
			rest, err := io.ReadAll(body)
			if err == nil {
				t.Fatalf("the stream ended cleanly after %q", rest)
			}
			if strings.Contains(string(rest), "fail here") || strings.Contains(string(rest), "xxxx") {
				t.Errorf("the bad line reached the client: %q", rest)
			}
			e := hook.waitExchanges(t, 1)[0]
			if e.Err == nil || e.Status != 200 {
				t.Errorf("recorded status %d err %v", e.Status, e.Err)
			}
			if err := p.waitServed(t); err == nil {
				t.Error("Serve returned nil after cutting the stream")
			}
		})
	}
}

// TestPassThroughStreams: without a masker a stream is passed as it comes too.
func TestPassThroughStreams(t *testing.T) {
	up := startLineStreamer(t, "application/octet-stream")
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, newFakeHook())
	_, body := streamClient(t, p.addr, "/raw")
	for i := range 3 {
		line := fmt.Sprintf("chunk %d %s\n", i, testEmail)
		up.send(t, line)
		if got := readLineWithin(t, body); got != line {
			t.Fatalf("got %q, want %q", got, line)
		}
	}
	up.send(t, "")
}
