package approval

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

func baseBinding() Binding {
	return Binding{
		SQL:    "DELETE FROM orders WHERE id = $1",
		Params: []Param{{Value: []byte("1"), TypeOID: 23}},
		Target: "prod-db", Database: "app", DBUser: "agent_rw", Subject: "alice",
	}
}

// TestBindingHash checks that changing any bound detail changes the hash, and that field
// boundaries cannot be shifted to forge a collision.
func TestBindingHash(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Binding)
	}{
		{"literal in the SQL", func(b *Binding) { b.SQL = strings.Replace(b.SQL, "$1", "2", 1) }},
		{"trailing space", func(b *Binding) { b.SQL += " " }},
		{"parameter value", func(b *Binding) { b.Params[0].Value = []byte("2") }},
		{"parameter type", func(b *Binding) { b.Params[0].TypeOID = 20 }},
		{"parameter format", func(b *Binding) { b.Params[0].Format = 1 }},
		{"NULL instead of empty", func(b *Binding) { b.Params[0] = Param{Null: true, TypeOID: 23} }},
		{"empty value", func(b *Binding) { b.Params[0].Value = nil }},
		{"extra parameter", func(b *Binding) { b.Params = append(b.Params, Param{Value: []byte("1"), TypeOID: 23}) }},
		{"no parameters", func(b *Binding) { b.Params = nil }},
		{"target", func(b *Binding) { b.Target = "staging-db" }},
		{"database", func(b *Binding) { b.Database = "billing" }},
		{"db user", func(b *Binding) { b.DBUser = "agent_ro" }},
		{"subject", func(b *Binding) { b.Subject = "mallory" }},
		{"bytes moved from database to target", func(b *Binding) { b.Target, b.Database = "prod-dba", "pp" }},
		{"bytes moved from user to subject", func(b *Binding) { b.DBUser, b.Subject = "agent_rwa", "lice" }},
		{"parameters 1 and 2", func(b *Binding) {
			b.Params = []Param{{Value: []byte("1"), TypeOID: 23}, {Value: []byte("2"), TypeOID: 23}}
		}},
		{"parameter 12", func(b *Binding) { b.Params[0].Value = []byte("12") }},
	}
	base := baseBinding().Hash()
	if len(base) != 64 {
		t.Fatalf("hash %q is not hex SHA-256", base)
	}
	if again := baseBinding().Hash(); again != base {
		t.Fatalf("hash not stable: %s vs %s", base, again)
	}
	seen := map[string]string{base: "base"}
	for _, tt := range tests {
		b := baseBinding()
		tt.change(&b)
		h := b.Hash()
		if prev, dup := seen[h]; dup {
			t.Errorf("%s hashes like %s", tt.name, prev)
		}
		seen[h] = tt.name
	}
}

// TestBindingHashKnown pins the encoding: a change to it would silently invalidate stored grants
// (and must come with a new bindingDomain).
func TestBindingHashKnown(t *testing.T) {
	var enc bytes.Buffer
	h := sha256.New()
	writeBinding(h, Binding{SQL: "SELECT 1", Subject: "a"})
	enc.Write(h.Sum(nil))
	want := sha256.New()
	for _, s := range []string{bindingDomain, "", "", "", "a", "SELECT 1"} {
		want.Write([]byte{0, 0, 0, 0, 0, 0, 0, byte(len(s))})
		want.Write([]byte(s))
	}
	want.Write(make([]byte, 8)) // zero parameters
	if got, w := hex.EncodeToString(enc.Bytes()), hex.EncodeToString(want.Sum(nil)); got != w {
		t.Fatalf("encoding changed: %s, want %s", got, w)
	}
}

// FuzzBindingHash checks that the encoding is injective: two bindings hash alike only when equal.
func FuzzBindingHash(f *testing.F) {
	f.Add("DELETE FROM t WHERE id = 1", "app", []byte("1"), false, "DELETE FROM t WHERE id = 2", "app", []byte("1"), false)
	f.Add("x", "ab", []byte(""), true, "xa", "b", []byte(""), false)
	f.Add("", "", []byte{0}, false, "", "", []byte{}, false)
	f.Fuzz(func(t *testing.T, sql1, db1 string, v1 []byte, null1 bool, sql2, db2 string, v2 []byte, null2 bool) {
		mk := func(sql, db string, v []byte, null bool) Binding {
			p := Param{Value: v, Null: null, TypeOID: 25}
			if null {
				p.Value = nil
			}
			return Binding{SQL: sql, Database: db, Target: "t", DBUser: "u", Subject: "s", Params: []Param{p}}
		}
		a, b := mk(sql1, db1, v1, null1), mk(sql2, db2, v2, null2)
		equal := a.SQL == b.SQL && a.Database == b.Database && a.Params[0].Null == b.Params[0].Null &&
			(a.Params[0].Null || slices.Equal(a.Params[0].Value, b.Params[0].Value))
		if (a.Hash() == b.Hash()) != equal {
			t.Fatalf("equal=%v but hashes %s %s", equal, a.Hash(), b.Hash())
		}
	})
}

func TestID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if len(id) != len(idPrefix)+idChars {
			t.Fatalf("id %q has the wrong length", id)
		}
		got, err := ParseID(id)
		if err != nil || got != id {
			t.Fatalf("ParseID(%q) = %q, %v", id, got, err)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"apr_abcdefgh23", "apr_abcdefgh23", true},
		{"  APR_ABCDEFGH23\n", "apr_abcdefgh23", true},
		{"apr_abcdefgh2", "", false},
		{"apr_abcdefgh234", "", false},
		{"apr_abcdefgh01", "", false},
		{"req_abcdefgh23", "", false},
		{"", "", false},
		{"apr_abcdefgh2;", "", false},
	}
	for _, tt := range tests {
		got, err := ParseID(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseID(%q) = %q, %v", tt.in, got, err)
		}
	}
}
