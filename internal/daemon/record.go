package daemon

import (
	"strings"
	"time"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/proxy"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// recordRelay records a raw TCP or TLS-passthrough session: who, which process, where, and how
// many bytes went each way.
func (d *Daemon) recordRelay(c *proxy.Conn) func(up, down int64, err error) {
	id := record.NewSessionID(time.Now())
	s, _ := c.Identity.(identity.Session)
	o := c.Origin
	start := time.Now()
	err := d.records.Append(record.Event{Type: record.TypeSessionStart, Session: id, Time: start, Start: &record.SessionStart{
		CgroupID: o.CgroupID,
		Identity: record.Identity{Subject: s.Subject, Email: s.Email, Groups: s.Groups, Provider: s.Provider},
		Origin:   o.Dst.String(),
		Process:  record.Process{Comm: o.Comm, PID: int(o.PID), UID: int(o.UID), Cmdline: strings.Fields(cmdline(int(o.PID)))},
		Protocol: c.Target.Protocol,
		Target:   record.Target{Name: c.Target.Name, Address: proxy.UpstreamAddr(c)},
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
