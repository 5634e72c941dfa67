package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/record"
)

func cmdStatus(ctx context.Context, fs *flag.FlagSet, args []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var st control.Status
	if err := client().Do(ctx, "GET", "/v1/status", nil, &st); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(st)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "mode:\t%s\n", st.Redirect.Mode)
	fmt.Fprintf(w, "cgroup:\t%s\n", st.Redirect.Cgroup)
	fmt.Fprintf(w, "proxy:\t127.0.0.1:%d, [::1]:%d\n", st.ProxyPort, st.ProxyPort)
	fmt.Fprintf(w, "policy:\t%s\n", st.Policy)
	if st.Identity != "" {
		fmt.Fprintf(w, "identity:\t%s\n", st.Identity)
	}
	if st.AgentCA != "" {
		fmt.Fprintf(w, "agent CA:\t%s (`enforcer run` trusts it; `enforcer agent-ca --env` for other launchers)\n", st.AgentCA)
	}
	var progs []string
	for _, p := range st.Redirect.Programs {
		s := p.Attach
		if p.Count != 1 {
			s += fmt.Sprintf("(x%d!)", p.Count)
		}
		progs = append(progs, s)
	}
	fmt.Fprintf(w, "attached:\t%s\n", strings.Join(progs, " "))
	var keys []string
	for k := range st.Redirect.Counters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var cs []string
	for _, k := range keys {
		cs = append(cs, fmt.Sprintf("%s=%d", k, st.Redirect.Counters[k]))
	}
	fmt.Fprintf(w, "counters:\t%s\n", strings.Join(cs, " "))
	w.Flush()
	fmt.Printf("\nlogin sessions (%d):\n", len(st.Sessions))
	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	for _, s := range st.Sessions {
		who := s.Subject
		if s.Email != "" {
			who = s.Email
		}
		fmt.Fprintf(w, "  %s\t%s\tuid %d\t%s\t%s\tuntil %s\n", s.ID, record.EscapeLine(who), s.UID, record.EscapeLine(strings.Join(s.Groups, ",")), s.State, s.Expiry.Local().Format("2006-01-02 15:04"))
	}
	w.Flush()
	fmt.Printf("\nenforced cgroups (%d):\n", len(st.Cgroups))
	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	for _, c := range st.Cgroups {
		var ps []string
		for _, p := range c.Procs {
			ps = append(ps, fmt.Sprintf("%d/%s", p.PID, record.EscapeLine(p.Comm)))
		}
		fmt.Fprintf(w, "  %s\tuid %d\t%s\t%s\n", c.Name, c.UID, c.Session, strings.Join(ps, " "))
	}
	w.Flush()
	fmt.Printf("\nconnections (%d):\n", len(st.Connections))
	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	for _, c := range st.Connections {
		fmt.Fprintf(w, "  #%d\t%s\t%s\tpid %d (%s)\t%s\tsince %s\n", c.ID, c.Target, c.Dst, c.PID, record.EscapeLine(c.Comm), record.EscapeLine(c.Identity), c.Since)
	}
	return w.Flush()
}
