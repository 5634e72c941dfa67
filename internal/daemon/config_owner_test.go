package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDaemonConfigMustBeRoots: the daemon refuses a configuration file another user could write
// (it names the policy, the state directory and the identity provider), while the CLI's readers
// of a configuration (record verify, uninstall) take any file they can read.
func TestDaemonConfigMustBeRoots(t *testing.T) {
	path := filepath.Join(t.TempDir(), "enforcer.yaml")
	if err := os.WriteFile(path, []byte("log_level: info\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDaemonConfig(path); err != nil {
		t.Fatalf("root's 0644 configuration: %v", err)
	}
	for _, c := range []struct {
		mode  os.FileMode
		uid   int
		wants string
	}{{0o666, 0, "chmod go-w"}, {0o620, 0, "chmod go-w"}, {0o600, 65534, "chown root"}} {
		os.Chmod(path, c.mode)
		os.Chown(path, c.uid, 0)
		if _, err := LoadDaemonConfig(path); err == nil || !strings.Contains(err.Error(), c.wants) {
			t.Errorf("mode %o uid %d: %v, want an error saying %q", c.mode, c.uid, err, c.wants)
		}
		if _, err := LoadConfig(path); err != nil {
			t.Errorf("mode %o uid %d: the CLI's reader refused it: %v", c.mode, c.uid, err)
		}
	}
}

// TestConfigChecks: profiles are served only on the metrics listener, so asking for them without
// one is a mistake the configuration's author hears of; so is a negative connection limit.
func TestConfigChecks(t *testing.T) {
	for _, c := range []struct {
		text  string
		wants string
	}{
		{"pprof: true\n", "set metrics"},
		{"metrics: 127.0.0.1:9464\npprof: true\n", ""},
		{"metrics: 127.0.0.1:9464\n", ""},
		{"max_connections_per_uid: -1\n", "want a positive count"},
		{"max_connections_per_uid: 50\n", ""},
	} {
		path := filepath.Join(t.TempDir(), "enforcer.yaml")
		if err := os.WriteFile(path, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path)
		switch {
		case c.wants == "" && err != nil:
			t.Errorf("%q: %v", c.text, err)
		case c.wants != "" && (err == nil || !strings.Contains(err.Error(), c.wants)):
			t.Errorf("%q: %v, want an error saying %q", c.text, err, c.wants)
		case c.wants == "" && cfg.Pprof != strings.Contains(c.text, "pprof: true"):
			t.Errorf("%q: pprof %v", c.text, cfg.Pprof)
		}
	}
}
