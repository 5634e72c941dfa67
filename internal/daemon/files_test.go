package daemon

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestPolicyWritableByOthersRefused: a policy file that a user other than root could write (owned
// by them, or group- or world-writable) is refused at start and on reload, and a reload keeps the
// running policy: whoever may write the file would decide who reaches what.
func TestPolicyWritableByOthersRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	const good = "version: 1\ntargets:\n  - name: a\n    match: {addresses: [\"198.18.0.0/15\"], ports: [7000]}\n    protocol: tcp\n"
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{cfg: &Config{Policy: path}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if _, err := d.loadPolicy(); err != nil {
		t.Fatalf("root-owned 0644 policy: %v", err)
	}
	running := d.policy.Load()
	os.WriteFile(path, []byte(good+"  - name: b\n    match: {addresses: [\"0.0.0.0/0\"]}\n    protocol: tcp\n"), 0o644)
	cases := []struct {
		name  string
		mode  os.FileMode
		uid   int
		wants string
	}{
		{"world-writable", 0o666, 0, "chmod go-w"},
		{"group-writable", 0o664, 0, "chmod go-w"},
		{"owned by another user", 0o644, 65534, "chown root"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(path, c.uid, 0); err != nil {
				t.Fatal(err)
			}
			defer os.Chown(path, 0, 0)
			defer os.Chmod(path, 0o644)
			if _, err := d.loadPolicy(); err == nil || !strings.Contains(err.Error(), c.wants) {
				t.Errorf("reload of a policy %s: err %v, want one saying %q", c.name, err, c.wants)
			}
			if d.policy.Load() != running {
				t.Errorf("reload of a policy %s replaced the running policy", c.name)
			}
			fresh := &Daemon{cfg: &Config{Policy: path}, log: d.log}
			if _, err := fresh.loadPolicy(); err == nil {
				t.Errorf("start with a policy %s: no error", c.name)
			}
		})
	}
}

// TestSecretFileChecksHoldForWhatIsRead: the owner and mode checks of a secret file apply to the
// file actually read; a path swapped between a root-owned 0600 file and a readable one (by
// whoever may write its directory) never yields the readable one's contents. A FIFO at the path
// is refused without hanging.
func TestSecretFileChecksHoldForWhatIsRead(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	os.WriteFile(good, []byte("root-secret"), 0o600)
	os.WriteFile(bad, []byte("planted"), 0o644)
	link := filepath.Join(dir, "secret")
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		tmp := filepath.Join(dir, "next")
		for i := 0; !stop.Load(); i++ {
			to := good
			if i%2 == 1 {
				to = bad
			}
			os.Remove(tmp)
			os.Symlink(to, tmp)
			os.Rename(tmp, link)
		}
	}()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		if v, err := readSecretFile(link); err == nil && v != "root-secret" {
			stop.Store(true)
			<-done
			t.Fatalf("readSecretFile returned %q, a file its checks refuse", v)
		}
	}
	stop.Store(true)
	<-done

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := readSecretFile(fifo); errc <- err }()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("a FIFO was read as a secret file")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("readSecretFile hangs on a FIFO")
	}
}
