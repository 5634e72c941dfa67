package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/rules"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

func cmdPolicy(ctx context.Context, fs *flag.FlagSet, args []string) error {
	if len(args) == 0 {
		fs.Usage()
		return exitCode(2)
	}
	switch args[0] {
	case "check":
		return policyCheck(fs, args[1:])
	case "explain":
		return policyExplain(fs, args[1:])
	}
	if isHelp(args[0]) {
		fs.SetOutput(os.Stdout)
		fs.Usage()
		return nil
	}
	fs.Usage()
	return exitCode(2)
}

func policyCheck(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: enforcer policy check FILE")
	}
	if _, err := policy.Load(fs.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitCode(1)
	}
	fmt.Printf("%s: ok\n", fs.Arg(0))
	return nil
}

func policyExplain(fs *flag.FlagSet, args []string) error {
	file := fs.String("policy", "/etc/enforcer/policy.yaml", "policy file")
	target := fs.String("target", "", "target name")
	sql := fs.String("sql", "", "SQL text to judge")
	as := fs.String("as", "", "identity as SUBJECT or SUBJECT/GROUP1,GROUP2")
	value := fs.String("value", "", "a sample value: show what masking makes of it")
	column := fs.String("column", "", "with --value: the column it comes from, as [schema.]table.column or column")
	database := fs.String("database", "", "the database the client asks for (default: the target's upstream database)")
	email := fs.String("email", "", "the identity's email")
	comm := fs.String("comm", "", "the process's name (process.comm)")
	exe := fs.String("exe", "", "the process's executable (process.exe)")
	uid := fs.Int64("uid", -1, "the process's uid (process.uid)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *target == "" || (*sql == "" && *value == "") {
		return errors.New(`usage: enforcer policy explain --target T (--sql "..." | --value SAMPLE [--column table.col]) [--as subject/group1,group2] [--email E] [--database D] [--comm C] [--exe PATH] [--uid N] [--policy FILE]`)
	}
	pol, err := policy.Load(*file)
	if err != nil {
		return err
	}
	var t *policy.Target
	for _, x := range pol.Targets {
		if x.Name == *target {
			t = x
		}
	}
	if t == nil {
		return fmt.Errorf("no target %q in %s", *target, *file)
	}
	subject, groupList, _ := strings.Cut(*as, "/")
	var groups []string
	if groupList != "" {
		groups = strings.Split(groupList, ",")
	}
	if *as != "" {
		if ok, msg := pol.Granted(t.Name, subject, groups); !ok {
			fmt.Printf("grant: refused: %s\n", msg)
		} else {
			fmt.Printf("grant: %s may use %s\n", subject, t.Name)
		}
	}
	if *value != "" {
		plan := pol.MaskFor(t.Name, groups)
		if plan == nil {
			fmt.Printf("masking: none for %s on %s: the value passes in clear\n", orAnyone(subject), t.Name)
		} else {
			col := mask.Column{}
			parts := strings.Split(*column, ".")
			switch len(parts) {
			case 3:
				col.Schema, col.Table, col.Name = parts[0], parts[1], parts[2]
			case 2:
				col.Table, col.Name = parts[0], parts[1]
			default:
				col.Name = parts[0]
			}
			col.Field = col.Name
			fmt.Print(plan.Explain(*value, col))
		}
		if *sql == "" {
			return nil
		}
	}
	// The daemon's rules see the database the proxy logs in to: the target's, else the one the
	// client asked for. Rules on fields given no value here see them empty (uid -1).
	db := cmp.Or(t.Upstream.Database, *database)
	if t.Upstream.Database != "" && *database != "" && *database != t.Upstream.Database {
		fmt.Printf("note: %s always logs in to database %s; --database %s is not what rules see\n", t.Name, t.Upstream.Database, *database)
	}
	fmt.Printf("judged as: subject %q groups %q email %q; process comm %q exe %q uid %d; target %s database %q user %q\n",
		subject, groups, *email, *comm, *exe, *uid, t.Name, db, t.Upstream.User)
	conn := rules.NewConn(rules.Identity{Subject: subject, Email: *email, Groups: groups},
		rules.Process{Comm: *comm, Exe: *exe, UID: *uid}, rules.Target{Name: t.Name, Protocol: t.Protocol, Database: db, User: t.Upstream.User})
	res := sqlclass.New(sqlclass.Options{}).Classify(*sql)
	d := pol.Rules.Decide(conn, res, nil)
	fmt.Print(rules.Explain(&d))
	return nil
}

func orAnyone(s string) string {
	if s == "" {
		return "anyone"
	}
	return s
}
