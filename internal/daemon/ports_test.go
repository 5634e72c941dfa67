package daemon

import (
	"slices"
	"testing"
)

// TestUnprivilegedPorts: the ports another local user could take while the daemon is down are
// the ones at or above the host's ip_unprivileged_port_start.
func TestUnprivilegedPorts(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		start int
		want  []uint16
	}{
		{"defaults", Config{ProxyPort: DefaultProxyPort}, 1024, nil},
		{"proxy port high", Config{ProxyPort: 15432}, 1024, []uint16{15432}},
		{"metrics port high", Config{ProxyPort: 700, Metrics: "127.0.0.1:9464"}, 1024, []uint16{9464}},
		{"both high", Config{ProxyPort: 1024, Metrics: "[::1]:9464"}, 1024, []uint16{1024, 9464}},
		{"every port unprivileged", Config{ProxyPort: 700}, 0, []uint16{700}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.cfg.unprivilegedPorts(c.start); !slices.Equal(got, c.want) {
				t.Fatalf("unprivilegedPorts(%d) = %v, want %v", c.start, got, c.want)
			}
		})
	}
}
