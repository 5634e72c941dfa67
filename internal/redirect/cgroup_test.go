package redirect

import (
	"fmt"
	"os"
	"testing"
)

// TestSubtreeHolds: the daemon confines callers by the cgroup path their /proc/PID/cgroup gives.
// Must hold: the subtree and everything under it are held, a sibling with the subtree's name as
// a prefix is not, and an unknown path is held (fail closed).
func TestSubtreeHolds(t *testing.T) {
	name := fmt.Sprintf("enforcer-holdtest-%d.slice", os.Getpid())
	sub, err := OpenSubtree(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.RemoveAll() })
	tests := []struct {
		cgroup string
		held   bool
	}{
		{"/" + name, true},
		{"/" + name + "/run-1000-ab12", true},
		{"/" + name + "/run-1000-ab12/../../user.slice", false},
		{"/" + name + "x/run-1000-ab12", false},
		{"/user.slice/user-1000.slice", false},
		{"/", false},
		{"", true},
	}
	for _, tt := range tests {
		if got := sub.Holds(tt.cgroup); got != tt.held {
			t.Errorf("Holds(%q) = %v, want %v", tt.cgroup, got, tt.held)
		}
	}
	if dir, ok := sub.Dir("/" + name + "/run-1"); !ok || dir != sub.Path+"/run-1" {
		t.Errorf("Dir = %q, %v", dir, ok)
	}
	if _, ok := sub.Dir(""); ok {
		t.Error("Dir of an unknown cgroup")
	}
}
