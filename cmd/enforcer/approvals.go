package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/record"
)

func cmdApprovals(ctx context.Context, fs *flag.FlagSet, args []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	all := fs.Bool("all", false, "include decided, expired and withdrawn requests")
	watch := fs.Bool("watch", false, "keep listing every 2 seconds")
	// Accept a request's id before or after the flags: it shows that request in any state.
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	if fs.NArg() > 1 || id != "" && fs.NArg() == 1 && fs.Arg(0) != id {
		return fmt.Errorf("approvals takes one request id at most; run `enforcer approvals --all` to list them")
	}
	for {
		var reqs []*approval.Request
		if id != "" {
			var r approval.Request
			if err := client().Do(ctx, "GET", "/v1/approvals/"+url.PathEscape(id), nil, &r); err != nil {
				return err
			}
			reqs = []*approval.Request{&r}
		} else {
			path := "/v1/approvals"
			if *all {
				path += "?all=1"
			}
			if err := client().Do(ctx, "GET", path, nil, &reqs); err != nil {
				return err
			}
		}
		if *asJSON {
			var out any = reqs
			if id != "" {
				out = reqs[0]
			}
			if err := writeJSON(out); err != nil {
				return err
			}
		} else {
			if *watch {
				fmt.Print("\033[H\033[2J")
			}
			printApprovals(reqs, *all)
		}
		if !*watch {
			return nil
		}
		time.Sleep(2 * time.Second)
	}
}

func printApprovals(reqs []*approval.Request, all bool) {
	switch {
	case len(reqs) == 0 && all:
		fmt.Println("no approval requests you may read")
		return
	case len(reqs) == 0:
		fmt.Println("no pending approval requests (`enforcer approvals --all` lists decided ones too)")
		return
	}
	// Everything but the ids, states and numbers comes from the agent, the identity provider or
	// a reviewer: escaped, so that none of it can rewrite what the reviewer reads.
	esc := record.EscapeLine
	for _, r := range reqs {
		who := r.Identity.Subject
		if r.Identity.Email != "" {
			who = r.Identity.Email
		}
		fmt.Printf("%s  %s  rule %s  age %s\n", r.ID, strings.ToUpper(string(r.State)), esc(r.Rule), time.Since(r.Created).Round(time.Second))
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "  requester:\t%s (groups %s)\n", esc(who), esc(strings.Join(r.Identity.Groups, ",")))
		fmt.Fprintf(w, "  process:\t%s pid %d  %s\n", esc(r.Process.Comm), r.Process.PID, esc(r.Process.Cmdline))
		what := "statement"
		if r.IsHTTP() {
			what = "request"
			user := ""
			if r.DBUser != "" {
				user = " as " + esc(r.DBUser)
			}
			fmt.Fprintf(w, "  target:\t%s (http)%s\n", esc(r.Target), user)
		} else {
			fmt.Fprintf(w, "  target:\t%s database %s as %s\n", esc(r.Target), esc(r.Database), esc(r.DBUser))
		}
		fmt.Fprintf(w, "  approvers:\t%s (quorum %d)\n", esc(strings.Join(r.Approvers, ",")), max(r.Quorum, 1))
		w.Flush()
		fmt.Printf("  %s:\n", what)
		for _, line := range strings.Split(r.SQL, "\n") {
			fmt.Printf("    %s\n", esc(line))
		}
		for i, p := range r.Params {
			v := p.Value
			if p.Null {
				v = "NULL"
			}
			if r.IsHTTP() {
				fmt.Printf("    body: %s\n", esc(v))
				continue
			}
			fmt.Printf("    $%d = %s\n", i+1, esc(v))
		}
		if note := approval.CutNote(r); note != "" {
			fmt.Printf("  %s", note)
		}
		for _, d := range r.Decisions {
			fmt.Printf("  %s by %s: %s\n", d.Verdict, esc(d.Reviewer.Subject), esc(d.Reason))
		}
		if r.State == approval.StatePending {
			fmt.Printf("  decide: enforcer approve %s   |   enforcer deny %s --reason \"...\"\n", r.ID, r.ID)
		}
		fmt.Println()
	}
}

func cmdApprove(ctx context.Context, fs *flag.FlagSet, args []string) error {
	return decide(ctx, fs, args, "approve")
}

func cmdDeny(ctx context.Context, fs *flag.FlagSet, args []string) error {
	return decide(ctx, fs, args, "deny")
}

func decide(ctx context.Context, fs *flag.FlagSet, args []string, verb string) error {
	reason := fs.String("reason", "", "why (required to deny; shown to the agent)")
	// Accept the id before or after the flags.
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	if id == "" {
		fs.Usage()
		return exitCode(2)
	}
	if verb == "deny" && strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("say why with --reason TEXT: the agent is shown it (enforcer deny %s --reason \"...\")", id)
	}
	var r approval.Request
	if err := client().Do(ctx, "POST", "/v1/approvals/"+id+"/"+verb, control.DecideRequest{Reason: *reason}, &r); err != nil {
		return err
	}
	fmt.Printf("%s: %s\n", r.ID, r.State)
	if r.Late && r.State == approval.StateApproved {
		fmt.Println("the request had expired: the same statement from the same identity will pass once on retry")
	}
	return nil
}
