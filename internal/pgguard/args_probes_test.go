package pgguard

import (
	"slices"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
)

// TestBackslashAndVariableArgumentProbes (from a review, 2026-12-06): argument forms in which a
// variable's value or a backslash command's argument must not stay in clear.
func TestBackslashAndVariableArgumentProbes(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	for _, c := range []struct {
		exe  string
		argv []string
	}{
		{"", []string{"psql", "-c", "\\set tel hunter2"}},
		{"", []string{"psql", "-c", "\\if true \\set tel hunter2 \\endif"}},
		{"", []string{"psql", "-c", "\\echo hunter2"}},
		{"", []string{"psql", "-Xc", "\\set tel hunter2"}},
		{"", []string{"psql", "-c\\set tel hunter2"}},
		{"", []string{"psql", "--command", "\\set tel hunter2"}},
		{"", []string{"psql", "--comma=\\set tel hunter2"}},
		{"/usr/bin/perl", []string{"/usr/bin/psql", "-v", "tel=hunter2"}},
		{"", []string{"psql", "--vari=tel=hunter2"}},
		{"", []string{"psql", "-Evtel=hunter2"}},
		{"", []string{"psql", "-E", "-v", "tel=hunter2"}},
		{"", []string{"psql", "-f", "x.sql", "--", "-v", "tel=hunter2"}},
		{"", []string{"pgbench", "-D", "tel=hunter2"}},
		{"", []string{"pgbench", "--define", "tel=hunter2"}},
		{"", []string{"pgbench", "-Dtel=hunter2"}},
		{"", []string{"psql", "-c", "\\pset title hunter2"}},
		{"", []string{"psql", "-c", "\\gset", "-c", "select 'hunter2' as tel \\gset"}},
		{"", []string{"psql", "-c", "\n\\set tel hunter2"}},
		{"", []string{"psql", "-c", "\\\\set tel hunter2"}},
	} {
		g := testShared(func() *policy.Policy { return pol }, nil).NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0],
			Identity: identity.Session{Subject: "alice"}, Exe: c.exe, Argv: c.argv, Cmdline: strings.Join(c.argv, " ")})
		if slices.ContainsFunc(g.info.Argv, func(a string) bool { return strings.Contains(a, "hunter") }) || strings.Contains(g.info.Cmdline, "hunter") {
			t.Errorf("%q shown as %q", c.argv, g.info.Argv)
		}
	}
}
