package http

import (
	"context"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/mask"
)

// allowHook allows every request and keeps nothing: the proxy's own cost.
type allowHook struct{ masker Masker }

func (h allowHook) Request(context.Context, *Request) Verdict { return Verdict{Allow: true} }
func (h allowHook) Masker(*Request) Masker                    { return h.masker }
func (allowHook) Exchanged(*Exchange)                         {}

// benchBody is a typical API answer: a page of 20 records, one email in each.
var benchBody = func() string {
	var b strings.Builder
	b.WriteString(`{"items": [`)
	for i := range 20 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"id": 12345, "name": "Some Customer", "email": "someone@example.com", "plan": "gold", "note": "called about the invoice, wants a callback tomorrow"}`)
	}
	b.WriteString(`]}`)
	return b.String()
}()

// BenchmarkProxy: keep-alive GETs of a 3 KiB JSON page from a loopback server, directly and
// through the proxy with and without masking, one client. Each variant runs b.N requests in
// the same benchmark, so the ratios it reports (proxy/direct, masked/direct: requests per
// second) compare runs on the same machine at the same moment.
//
//	go test -run '^$' -bench Proxy -benchtime 3000x ./internal/proto/http
func BenchmarkProxy(b *testing.B) {
	up := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, benchBody)
	}))
	defer up.Close()
	plan, err := mask.NewPlan(nil, mask.Config{})
	if err != nil {
		b.Fatal(err)
	}
	proxied := func(m Masker) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(func() { cancel(); ln.Close() })
		srv := &Server{}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go srv.Serve(ctx, c, Session{ID: "bench", Upstream: Upstream{Addr: up.Listener.Addr().String()}, Hook: allowHook{masker: m}, Log: log})
			}
		}()
		return "http://" + ln.Addr().String()
	}
	variants := []struct {
		name string
		url  string
	}{
		{"direct", up.URL},
		{"proxy", proxied(nil)},
		{"masked", proxied(plan)},
	}
	perReq := map[string]float64{}
	b.ResetTimer()
	for _, v := range variants {
		client := &nethttp.Client{Transport: &nethttp.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, DisableCompression: true}}
		get := func() {
			resp, err := client.Get(v.url + "/v1/customers")
			if err != nil {
				b.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || len(body) < len(benchBody)/2 {
				b.Fatalf("%s: status %d, %d bytes", v.name, resp.StatusCode, len(body))
			}
		}
		get() // the connection, outside the timing
		start := time.Now()
		for range b.N {
			get()
		}
		perReq[v.name] = float64(time.Since(start).Nanoseconds()) / float64(b.N)
		client.CloseIdleConnections()
	}
	b.StopTimer()
	for _, v := range variants {
		b.ReportMetric(perReq[v.name]/1000, v.name+"-µs/req")
	}
	b.ReportMetric(perReq["direct"]/perReq["proxy"], "proxy/direct")
	b.ReportMetric(perReq["direct"]/perReq["masked"], "masked/direct")
}
