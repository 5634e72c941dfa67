package metrics

import (
	"context"
	"net"
	"net/http"
	"testing"
)

// TestProfilesOnlyWhenAsked: /metrics is always served; Go's profiles only with profiles set,
// since any local user can reach the loopback listener.
func TestProfilesOnlyWhenAsked(t *testing.T) {
	for _, profiles := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- New().serve(ctx, ln, profiles) }()
		want := map[string]int{"/metrics": http.StatusOK, "/debug/pprof/": http.StatusNotFound, "/debug/pprof/goroutine": http.StatusNotFound}
		if profiles {
			want["/debug/pprof/"], want["/debug/pprof/goroutine"] = http.StatusOK, http.StatusOK
		}
		for path, code := range want {
			resp, err := http.Get("http://" + ln.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != code {
				t.Errorf("profiles %v: GET %s = %d, want %d", profiles, path, resp.StatusCode, code)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestServeRefusesOtherAddresses: the listener must be on loopback.
func TestServeRefusesOtherAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9464", "198.18.0.1:9464", "localhost"} {
		if err := New().Serve(context.Background(), addr, false); err == nil {
			t.Errorf("Serve(%q) accepted", addr)
		}
	}
}
