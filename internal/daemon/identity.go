package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/proxy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// newLoginLimit bounds each user's logins. A person logs in a few times a day: five at once
// covers retries and a few terminals, and one every six seconds after that keeps a user who
// loops on POST /v1/login to ten writes of the identity state a minute, each of at most
// identity.DefaultMaxSessionsPerUID sessions of theirs.
func newLoginLimit() *control.RateLimit {
	return &control.RateLimit{What: "logins", Every: 6 * time.Second, Burst: 5}
}

func (d *Daemon) startIdentity() error {
	p, err := identity.NewProvider(d.cfg.Identity)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	d.ids, err = identity.NewManager(identity.ManagerConfig{
		StateDir:       filepath.Join(d.cfg.StateDir, "identity"),
		Provider:       p,
		OnEnd:          d.sessionEnded,
		OnGroupsChange: d.sessionGroupsChanged,
		Logger:         d.log,
	})
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

// sessionEnded closes the live connections of every cgroup bound to a session that expired or
// was revoked.
func (d *Daemon) sessionEnded(ev identity.EndEvent) {
	if d.proxy == nil {
		return
	}
	n := d.proxy.CloseWhere(func(c *proxy.Conn) bool { return slices.Contains(ev.CgroupIDs, c.Origin.CgroupID) })
	d.log.Info("session ended", "session", ev.Session.ID, "subject", ev.Session.Subject, "reason", string(ev.Reason), "closed_connections", n)
}

// sessionGroupsChanged closes the live connections of every cgroup bound to a session whose
// groups changed: each was granted, and given its masking and the rules' view of the person, for
// the old groups when it opened. The agent's next connection is judged with the new ones.
func (d *Daemon) sessionGroupsChanged(ev identity.GroupsEvent) {
	if d.proxy == nil {
		return
	}
	n := d.proxy.CloseWhere(func(c *proxy.Conn) bool { return slices.Contains(ev.CgroupIDs, c.Origin.CgroupID) })
	d.log.Info("session's groups changed; its live connections were closed", "session", ev.Session.ID, "subject", ev.Session.Subject,
		"old_groups", ev.OldGroups, "groups", ev.Session.Groups, "closed_connections", n)
}

// authorize ties a connection to the session its cgroup is bound to and checks the grants.
func (d *Daemon) authorize(ctx context.Context, c *proxy.Conn) (any, error) {
	s, err := d.ids.Lookup(c.Origin.CgroupID)
	if err != nil {
		return nil, &refusal{Message: "enforcer: " + identity.UserMessage(err)}
	}
	if ok, msg := d.policy.Load().Granted(c.Target.Name, s.Subject, s.Groups); !ok {
		return nil, &refusal{Message: "enforcer: " + msg, Hint: "ask a policy administrator for a grant"}
	}
	c.Log = c.Log.With("subject", s.Subject)
	return s, nil
}

// bindRun ties a fresh run cgroup to the caller's current session; a run started from inside an
// enforced cgroup gets that cgroup's session, not whichever its Unix user logged in to last.
func (d *Daemon) bindRun(c control.Caller, cg *redirect.Cgroup) error {
	if d.confined(c) {
		sid, err := d.callerSession(c)
		if err != nil {
			return err
		}
		return identityError(d.ids.Bind(0, cg.ID, sid))
	}
	s, err := d.ids.Current(c.UID)
	if err != nil {
		return control.Errorf(http.StatusUnauthorized, "%s", identity.UserMessage(err))
	}
	if err := d.ids.Bind(c.UID, cg.ID, s.ID); err != nil {
		return identityError(err)
	}
	return nil
}

func identityError(err error) error {
	switch {
	case errors.Is(err, identity.ErrPermission):
		return control.Errorf(http.StatusForbidden, "%v", err)
	case errors.Is(err, identity.ErrNoSuchSession):
		return control.Errorf(http.StatusNotFound, "%v", err)
	case errors.Is(err, identity.ErrNotLoggedIn), errors.Is(err, identity.ErrSessionExpired), errors.Is(err, identity.ErrSessionRevoked):
		return control.Errorf(http.StatusUnauthorized, "%s", identity.UserMessage(err))
	case errors.Is(err, identity.ErrTokenInvalid), errors.Is(err, identity.ErrTokenExpired),
		errors.Is(err, identity.ErrTokenNotYet), errors.Is(err, identity.ErrNonceMismatch):
		return control.Errorf(http.StatusUnauthorized, "token refused: %v", err)
	}
	return err
}

func (d *Daemon) identityRoutes() []control.Route {
	return []control.Route{
		{Pattern: "GET /v1/login/config", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			return d.ids.Provider().LoginConfig(), nil
		}},
		{Pattern: "POST /v1/login", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			if d.confined(c) {
				return nil, refuseConfined(c, "log in")
			}
			if err := d.loginLimit.Allow(c, false); err != nil {
				return nil, err
			}
			var req control.LoginRequest
			if err := control.Decode(r, &req); err != nil {
				return nil, err
			}
			var s identity.Session
			var err error
			if d.ids.Provider().Kind() == identity.KindLocal {
				s, err = d.ids.LoginLocal(c.UID)
			} else {
				if req.Tokens == nil || req.Tokens.IDToken == "" {
					return nil, control.Errorf(http.StatusBadRequest, "no ID token: log in with `enforcer login`")
				}
				s, err = d.ids.Login(ctx, c.UID, *req.Tokens)
			}
			if err != nil {
				return nil, identityError(err)
			}
			d.log.Info("login", "uid", c.UID, "subject", s.Subject, "session", s.ID, "provider", s.Provider)
			return s, nil
		}},
		{Pattern: "POST /v1/logout", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			if d.confined(c) {
				return nil, refuseConfined(c, "log out")
			}
			var req control.LogoutRequest
			if err := control.Decode(r, &req); err != nil {
				return nil, err
			}
			if req.Session != "" {
				return nil, identityError(d.ids.Logout(c.UID, req.Session))
			}
			n, err := d.ids.LogoutUID(c.UID, c.UID)
			if err != nil {
				return nil, identityError(err)
			}
			return map[string]int{"ended": n}, nil
		}},
		{Pattern: "GET /v1/sessions", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			out := control.Sessions{Provider: d.ids.Provider().Name(), Sessions: d.ids.Sessions(c.UID), Bindings: map[string]string{}}
			for cg, sid := range d.ids.Bindings(c.UID) {
				out.Bindings[fmt.Sprint(cg)] = sid
			}
			return out, nil
		}},
		{Pattern: "POST /v1/bind", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			if d.confined(c) {
				return nil, refuseConfined(c, "bind cgroups to sessions")
			}
			var req control.BindRequest
			if err := control.Decode(r, &req); err != nil {
				return nil, err
			}
			if !c.IsRoot() {
				return nil, control.Errorf(http.StatusForbidden, "only root enrols cgroups with a workload identity")
			}
			path := filepath.Clean(req.Cgroup)
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(d.subtree.Path), path)
			}
			if !strings.HasPrefix(path, d.subtree.Path+"/") {
				return nil, control.Errorf(http.StatusBadRequest, "cgroup %s is not under the enforcement subtree %s: run the agent's unit in that slice (systemd: Slice=%s)", path, d.subtree.Path, filepath.Base(d.subtree.Path))
			}
			id, err := redirect.CgroupID(path)
			if err != nil {
				return nil, control.Errorf(http.StatusBadRequest, "%v", err)
			}
			s, err := d.ids.BindWorkload(ctx, c.UID, id, req.TokenFile)
			if err != nil {
				return nil, identityError(err)
			}
			d.log.Info("workload bound", "cgroup", path, "subject", s.Subject, "session", s.ID)
			return s, nil
		}},
	}
}
