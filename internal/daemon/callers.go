package daemon

import (
	"net/http"
	"slices"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// confined reports whether c runs inside the enforcement subtree (an agent, or anything it
// started) or could not be placed. A confined caller decides no approvals and changes no
// identity, whatever its uid: an agent must not approve statements (its own or anyone's) with
// a reviewer's session of its Unix user, nor log in, out or bind to take another person's.
func (d *Daemon) confined(c control.Caller) bool { return d.subtree.Holds(c.Cgroup) }

// refuseConfined is the error for what an enforced process may not ask.
func refuseConfined(c control.Caller, what string) error {
	return control.Errorf(http.StatusForbidden, "enforced processes cannot %s (pid %d runs under the enforcement cgroup): run it from a shell outside `enforcer run`", what, c.PID)
}

// callerSession is the id of the session a confined caller's own cgroup is bound to: all it may
// act as.
func (d *Daemon) callerSession(c control.Caller) (string, error) {
	dir, ok := d.subtree.Dir(c.Cgroup)
	if !ok {
		return "", control.Errorf(http.StatusForbidden, "pid %d: its cgroup could not be read", c.PID)
	}
	id, err := redirect.CgroupID(dir)
	if err != nil {
		return "", control.Errorf(http.StatusForbidden, "pid %d: %v", c.PID, err)
	}
	sid, ok := d.ids.Bindings(0)[id]
	if !ok {
		return "", control.Errorf(http.StatusUnauthorized, "this process's cgroup is bound to no session: run `enforcer login`, then `enforcer run` from a shell outside it")
	}
	return sid, nil
}

// mayRead says whether c may see request r: root outside the subtree sees every request; a
// confined caller those of its cgroup's session; anyone else their own uid's on this host and
// those their current session may decide.
func (d *Daemon) mayRead(c control.Caller, confinedTo string, rev *approval.Reviewer, r *approval.Request) bool {
	switch {
	case confinedTo != "":
		return r.Identity.SessionID == confinedTo
	case c.IsRoot():
		return true
	case r.Owner == d.host && r.Identity.UID == c.UID:
		return true
	}
	return rev != nil && slices.ContainsFunc(rev.Groups, func(g string) bool { return slices.Contains(r.Approvers, g) })
}
