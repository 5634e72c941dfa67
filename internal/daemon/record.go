package daemon

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/proxy"
	"github.com/enforcer-dev/enforcer/internal/record"
	"github.com/enforcer-dev/enforcer/internal/record/pgsink"
)

// shipped is the fleet sink, if one is configured; retention keeps every record it has not
// shipped.
var shipped atomic.Pointer[pgsink.Sink]

func (d *Daemon) keepFrom() uint64 {
	if s := shipped.Load(); s != nil {
		return s.Shipped() + 1
	}
	return 0
}

// newRecordSink prepares the fleet sink, if configured. It runs before the recorder opens: the
// recorder applies retention at Open, and must not delete what the sink has not shipped.
func (d *Daemon) newRecordSink(dir string) error {
	f := d.cfg.Fleet.RecordsDSNFile
	if f == "" {
		return nil
	}
	dsn, err := readSecretFile(f)
	if err != nil {
		return fmt.Errorf("fleet records: %w", err)
	}
	s, err := pgsink.New(pgsink.Config{Dir: dir, ConnString: dsn, Table: d.cfg.Fleet.RecordsTable, Logger: d.log,
		Durable: func() uint64 { return d.records.Durable() }})
	if err != nil {
		return fmt.Errorf("fleet records sink: %w", err)
	}
	shipped.Store(s)
	return nil
}

// sinkRetry is how long the fleet sink waits before it reads the log again after it could not.
const sinkRetry = 5 * time.Second

// runRecordSink ships the session log to the fleet database until ctx is done. It never blocks
// the data path: it reads the log files and resumes from its saved position after an outage. A
// log it cannot read (a segment being rotated away, a damaged line) stops it only for a while:
// while it is stopped, retention keeps everything it has not shipped.
func (d *Daemon) runRecordSink(ctx context.Context) {
	s := shipped.Load()
	if s == nil {
		return
	}
	go func() {
		for {
			err := s.Run(ctx)
			if ctx.Err() != nil {
				return
			}
			d.log.Error("fleet records sink stopped; retrying", "err", err, "retry_in", sinkRetry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(sinkRetry):
			}
		}
	}()
}

// readSecretFile reads a secret (password, DSN, key): a regular file owned by root that nobody
// else can read (0600 or stricter), since a secret others can read is already leaked. The checks
// are made on the descriptor read, so the path cannot be swapped between them and the read.
// Surrounding whitespace is dropped.
func readSecretFile(path string) (string, error) {
	b, err := readRootFile(path, "secret file", 0o077, "it must be 0600 (chmod 600 "+path+")")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// recordRelay records a raw TCP or TLS-passthrough session: who, which process, where, and how
// many bytes went each way.
func (d *Daemon) recordRelay(c *proxy.Conn) func(up, down int64, err error) {
	pol := d.policy.Load()
	if pol.Recording.Disabled {
		return func(int64, int64, error) {}
	}
	id := record.NewSessionID(time.Now())
	s, _ := c.Identity.(identity.Session)
	o := c.Origin
	p := readProc(int(o.PID))
	start := time.Now()
	err := d.records.Append(record.Event{Type: record.TypeSessionStart, Session: id, Time: start, Start: &record.SessionStart{
		CgroupID:   o.CgroupID,
		CgroupPath: p.cgroup,
		Identity:   record.Identity{Subject: s.Subject, Email: s.Email, Groups: s.Groups, Provider: s.Provider},
		Origin:     o.Dst.String(),
		Process:    record.Process{Comm: o.Comm, Exe: p.exe, PID: int(o.PID), UID: int(o.UID), Cmdline: pol.MaskForProcess(c.Target.Name, s.Groups).MaskStrings(p.argv)},
		Protocol:   c.Target.Protocol,
		Target:     record.Target{Name: c.Target.Name, Address: proxy.UpstreamAddr(c)},
	}}, record.Async)
	if err != nil {
		// Fail closed: an unrecorded session does not run.
		d.log.Error("session log write failed; connection closed", "err", err)
		c.Close()
	}
	return func(up, down int64, err error) {
		reason := "closed"
		if err != nil {
			reason = err.Error()
		}
		if err := d.records.Append(record.Event{Type: record.TypeSessionEnd, Session: id, Time: time.Now(), End: &record.SessionEnd{
			BytesIn: up, BytesOut: down, DurationUS: time.Since(start).Microseconds(), Reason: reason,
		}}, record.Async); err != nil {
			d.log.Error("session log write failed", "err", err)
		}
	}
}
