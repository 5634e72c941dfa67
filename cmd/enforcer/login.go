package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/record"
)

func cmdLogin(ctx context.Context, fs *flag.FlagSet, args []string) error {
	browser := fs.Bool("browser", false, "log in in a browser (authorization code + PKCE, loopback redirect) instead of the device code flow")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cl := client()
	var lc identity.LoginConfig
	if err := cl.Do(ctx, "GET", "/v1/login/config", nil, &lc); err != nil {
		return err
	}
	req := control.LoginRequest{}
	if lc.Provider != identity.KindLocal {
		var toks *identity.TokenSet
		var err error
		if *browser {
			toks, err = identity.LoginPKCE(ctx, lc, os.Stderr, identity.PKCEOptions{})
		} else {
			toks, err = identity.LoginDevice(ctx, lc, os.Stderr)
		}
		if err != nil {
			return fmt.Errorf("login at %s: %w", lc.Issuer, err)
		}
		req.Tokens = toks
	}
	var s identity.Session
	if err := cl.Do(ctx, "POST", "/v1/login", req, &s); err != nil {
		return err
	}
	who := s.Subject
	if s.Email != "" {
		who = s.Email
	}
	fmt.Printf("logged in as %s (groups: %s) via %s until %s\n", who, strings.Join(s.Groups, ", "), s.Provider, s.Expiry.Local().Format(time.RFC1123))
	fmt.Println("next: enforcer run -- YOUR-AGENT")
	return nil
}

func cmdLogout(ctx context.Context, fs *flag.FlagSet, args []string) error {
	id := fs.String("session", "", "end only this session (default: all of yours)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := client().Do(ctx, "POST", "/v1/logout", control.LogoutRequest{Session: *id}, nil); err != nil {
		return err
	}
	fmt.Println("logged out; connections of your enforced processes are closed")
	return nil
}

func cmdLogins(ctx context.Context, fs *flag.FlagSet, args []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var out control.Sessions
	if err := client().Do(ctx, "GET", "/v1/sessions", nil, &out); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(out)
	}
	bound := map[string][]string{}
	for cg, sid := range out.Bindings {
		bound[sid] = append(bound[sid], cg)
	}
	fmt.Printf("provider: %s\n", out.Provider)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SESSION\tSUBJECT\tEMAIL\tGROUPS\tUID\tSTATE\tEXPIRES\tCGROUPS")
	for _, s := range out.Sessions {
		kind := ""
		if s.Workload {
			kind = " (workload)"
		}
		fmt.Fprintf(w, "%s\t%s%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.Subject, kind, s.Email, strings.Join(s.Groups, ","), s.UID, s.State,
			s.Expiry.Local().Format("2006-01-02 15:04"), strings.Join(bound[s.ID], ","))
	}
	return w.Flush()
}

func cmdBind(ctx context.Context, fs *flag.FlagSet, args []string) error {
	cg := fs.String("cgroup", "", "cgroup of the agent (e.g. its systemd unit in enforcer.slice), absolute or relative to the cgroup2 mount")
	tokenFile := fs.String("token-file", "", "file holding the workload's ID token; re-read when it changes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cg == "" || *tokenFile == "" {
		fs.Usage()
		return exitCode(2)
	}
	var s identity.Session
	if err := client().Do(ctx, "POST", "/v1/bind", control.BindRequest{Cgroup: *cg, TokenFile: *tokenFile}, &s); err != nil {
		return err
	}
	fmt.Printf("cgroup %s bound to workload %s until %s\n", *cg, s.Subject, s.Expiry.Local().Format(time.RFC1123))
	return nil
}

// writeJSON prints v as indented JSON for a terminal or a program: values from agents and
// servers (process names, statements) may hold characters a terminal acts on, which are escaped.
func writeJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(record.EscapeJSONControls(append(b, '\n')))
	return err
}
