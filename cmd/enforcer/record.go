package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/enforcer-dev/enforcer/internal/daemon"
	"github.com/enforcer-dev/enforcer/internal/record"
	"github.com/enforcer-dev/enforcer/internal/record/pgsink"
)

// recordDir finds the session log: --dir, else state_dir/records of the daemon configuration.
func recordDir(dir, cfgPath string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		cfgPath = ""
	}
	cfg, err := daemon.LoadConfig(cfgPath)
	if err != nil {
		return "", err
	}
	d := filepath.Join(cfg.StateDir, "records")
	if _, err := os.Stat(d); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return "", fmt.Errorf("%s is readable by root only: run this command with sudo", d)
		}
		return "", fmt.Errorf("no session log at %s (pass --config FILE or --dir DIR): %w", d, err)
	}
	return d, nil
}

func logFlags(fs *flag.FlagSet) (dir, cfg *string) {
	dir = fs.String("dir", "", "session log directory (default: state_dir/records of --config)")
	cfg = fs.String("config", "/etc/enforcer/enforcer.yaml", "daemon configuration file")
	return
}

func cmdSessions(ctx context.Context, fs *flag.FlagSet, args []string) error {
	dir, cfg := logFlags(fs)
	user := fs.String("user", "", "only sessions of this subject or email")
	target := fs.String("target", "", "only sessions to this target")
	since := fs.Duration("since", 0, "only sessions started within this long (e.g. 24h)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	d, err := recordDir(*dir, *cfg)
	if err != nil {
		return err
	}
	f := record.SessionFilter{User: *user, Target: *target}
	if *since > 0 {
		f.Since = time.Now().Add(-*since)
	}
	ss, err := record.Sessions(d, f)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(ss)
	}
	return record.RenderSessions(os.Stdout, ss, time.Local)
}

func cmdReplay(ctx context.Context, fs *flag.FlagSet, args []string) error {
	dir, cfg := logFlags(fs)
	asJSON := fs.Bool("json", false, "print the session's records as JSON (with --follow, one record per line as it is written)")
	follow := fs.Bool("follow", false, "keep printing a live session as it happens")
	var id string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	if id == "" {
		return errors.New("usage: enforcer replay SESSION-ID [--json] [--follow]  (list sessions with `enforcer sessions`)")
	}
	d, err := recordDir(*dir, *cfg)
	if err != nil {
		return err
	}
	if *follow {
		// A JSON array cannot be written before the session ends, so a followed session is
		// printed as JSON lines, each one element of what plain --json prints.
		render := func(r record.Record) error {
			return record.RenderRecord(os.Stdout, r, record.ReplayOptions{Location: time.Local})
		}
		if *asJSON {
			render = func(r record.Record) error { return record.RenderRecordJSON(os.Stdout, r) }
		}
		return record.FollowSession(ctx, d, id, render)
	}
	recs, err := record.LoadSession(d, id)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("no session %s (list them with `enforcer sessions`)", id)
	}
	if *asJSON {
		return record.RenderReplayJSON(os.Stdout, recs)
	}
	return record.RenderReplay(os.Stdout, recs, record.ReplayOptions{Location: time.Local})
}

func cmdRecord(ctx context.Context, fs *flag.FlagSet, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, recordUsage)
		return exitCode(2)
	}
	sub, args := args[0], args[1:]
	dir, cfg := logFlags(fs)
	switch sub {
	case "verify":
		cpFile := fs.String("checkpoint", "", "an exported checkpoint: also detects truncation of the log's tail")
		asJSON := fs.Bool("json", false, "print JSON")
		if err := fs.Parse(args); err != nil {
			return err
		}
		d, err := recordDir(*dir, *cfg)
		if err != nil {
			return err
		}
		var cp *record.Checkpoint
		if *cpFile != "" {
			if cp, err = record.ReadCheckpoint(*cpFile); err != nil {
				return err
			}
		}
		rep, err := record.Verify(d, cp)
		if err != nil {
			return err
		}
		if *asJSON {
			if err := writeJSON(rep); err != nil {
				return err
			}
		} else if err := record.RenderVerify(os.Stdout, rep); err != nil {
			return err
		}
		if rep.Err() != nil {
			return exitCode(1)
		}
		return nil
	case "export":
		format := fs.String("format", "jsonl", "jsonl (records as stored) or asciicast (a terminal recording of the replay)")
		session := fs.String("session", "", "only this session (required for asciicast)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		d, err := recordDir(*dir, *cfg)
		if err != nil {
			return err
		}
		switch *format {
		case "jsonl":
			if *session == "" {
				return record.ExportLog(os.Stdout, d, 0)
			}
			recs, err := record.LoadSession(d, *session)
			if err != nil {
				return err
			}
			return record.ExportJSONL(os.Stdout, recs)
		case "asciicast":
			if *session == "" {
				return errors.New("asciicast export needs --session ID")
			}
			recs, err := record.LoadSession(d, *session)
			if err != nil {
				return err
			}
			return record.ExportAsciicast(os.Stdout, recs, record.AsciicastOptions{})
		}
		return fmt.Errorf("unknown format %q (jsonl or asciicast)", *format)
	case "sink-sql":
		table := fs.String("table", pgsink.DefaultTable, "the table (NAME or SCHEMA.NAME), as fleet.records_table names it")
		role := fs.String("role", "enforcer_sink", "the role the hosts log in as (fleet.records_dsn_file)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("sink-sql takes no arguments, only --table and --role; got %q", fs.Args())
		}
		if err := pgsink.CheckName(*table, true); err != nil {
			return fmt.Errorf("--table %w", err)
		}
		if err := pgsink.CheckName(*role, false); err != nil {
			return fmt.Errorf("--role %w", err)
		}
		fmt.Printf("-- The fleet's session-log table, and grants that let %s insert rows and do nothing\n"+
			"-- else. Run once as the owner of the table's schema, after creating the role:\n"+
			"--   CREATE ROLE %s LOGIN PASSWORD '…';\n%s%s",
			*role, pgx.Identifier{*role}.Sanitize(), pgsink.SchemaFor(*table), pgsink.GrantsFor(*table, *role))
		return nil
	case "checkpoint":
		out := fs.String("out", "", "write the latest signed checkpoint here (default stdout)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		d, err := recordDir(*dir, *cfg)
		if err != nil {
			return err
		}
		cp, err := record.LatestCheckpoint(d)
		if err != nil {
			return err
		}
		w := os.Stdout
		if *out != "" {
			f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		return record.ExportCheckpoint(w, *cp)
	}
	if isHelp(sub) {
		fmt.Println(recordUsage)
		return nil
	}
	fmt.Fprintf(os.Stderr, "enforcer record: unknown command %q\n%s\n", sub, recordUsage)
	return exitCode(2)
}

// recordUsage lists the record commands and their flags.
const recordUsage = `usage: enforcer record verify [--checkpoint FILE] [--json]
       enforcer record export [--format jsonl|asciicast] [--session ID]
       enforcer record checkpoint [--out FILE]
       enforcer record sink-sql [--table NAME] [--role NAME]

Each but sink-sql (the fleet sink's table and grants, to run in its database) also takes
--dir DIR or --config FILE to find the log. Run ` + "`enforcer record verify -h`" + ` (or export,
checkpoint, sink-sql) for a command's flags.`
