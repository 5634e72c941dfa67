package postgres

import "testing"

// TestTable: the unnamed entry and named ones are kept apart, put returns what it replaced, and a
// nil put removes.
func TestTable(t *testing.T) {
	a, b, c := new(stmtInfo), new(stmtInfo), new(stmtInfo)
	var tab table[stmtInfo] // the zero table works
	steps := []struct {
		op      string
		name    string
		v       *stmtInfo
		wantOld *stmtInfo
	}{
		{"get", "", nil, nil},
		{"get", "s1", nil, nil},
		{"put", "", a, nil},
		{"put", "s1", b, nil},
		{"get", "", nil, a},
		{"get", "s1", nil, b},
		{"put", "", c, a},
		{"put", "s1", nil, b},
		{"get", "s1", nil, nil},
		{"get", "", nil, c},
		{"put", "s2", a, nil},
		{"put", "s2", b, a},
		{"get", "s2", nil, b},
		{"put", "", nil, c},
		{"get", "", nil, nil},
		{"put", "never", nil, nil},
	}
	for i, s := range steps {
		var got *stmtInfo
		if s.op == "get" {
			got = tab.get(s.name)
		} else {
			got = tab.put(s.name, s.v)
		}
		if got != s.wantOld {
			t.Fatalf("step %d: %s %q returned %p, want %p", i, s.op, s.name, got, s.wantOld)
		}
	}
	if len(tab.named) != 1 {
		t.Fatalf("%d named entries left, want 1", len(tab.named))
	}
}
