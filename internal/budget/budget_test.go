package budget

import "testing"

// TestShares: no owner takes more than three quarters of the limit, whatever is left, so the
// others always have a quarter; nothing goes past the limit in all; what is given back can be
// taken again, by anyone.
func TestShares(t *testing.T) {
	var s Shared
	steps := []struct {
		owner string
		n     int64 // taken, or given back when negative
		ok    bool
	}{
		{"a", 75, true},
		{"a", 1, false}, // a's share
		{"b", 25, true},
		{"c", 1, false}, // the limit
		{"a", -10, true},
		{"c", 10, true},
		{"b", 1, false},
		{"a", -65, true},
		{"b", 50, true},
		{"b", 1, false}, // b's share
		{"d", 0, true},
	}
	for i, st := range steps {
		if got := s.Take(st.owner, st.n, 100); got != st.ok {
			t.Fatalf("step %d: %s takes %d: %v, want %v", i, st.owner, st.n, got, st.ok)
		}
	}
	if all, a := s.InUse("a"); all != 85 || a != 0 || len(s.byOwner) != 2 {
		t.Errorf("in use %d, a's %d, owners %v; want 85, 0 and two", all, a, s.byOwner)
	}
	s.Give("b", 75)
	s.Give("c", 10)
	if all, _ := s.InUse(""); all != 0 || len(s.byOwner) != 0 {
		t.Errorf("all given back, yet %d in use by %v", all, s.byOwner)
	}
	var none *Shared
	if !none.Take("a", 1<<40, 0) {
		t.Error("a nil Shared refused")
	}
}
