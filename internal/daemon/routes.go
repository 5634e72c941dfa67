package daemon

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/identity"
)

func (d *Daemon) routes() []control.Route {
	routes := append(d.identityRoutes(), d.approvalRoutes()...)
	return append(routes, []control.Route{
		{Pattern: "GET /v1/status", Handle: d.handleStatus},
		{Pattern: "GET /v1/agent-ca", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			// A certificate is public: anyone may ask.
			return &control.AgentCA{PEM: string(d.agentCA.CertPEM()), File: agentCAFile(d.cfg), Bundle: d.agentCABundle}, nil
		}},
		{Pattern: "POST /v1/runs", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			var req control.RunRequest
			if err := control.Decode(r, &req); err != nil {
				return nil, err
			}
			return d.createRun(c)
		}},
		{Pattern: "POST /v1/runs/{name}/enter", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			var req control.EnterRequest
			if err := control.Decode(r, &req); err != nil {
				return nil, err
			}
			return nil, d.enterRun(c, r.PathValue("name"), req.PID)
		}},
		{Pattern: "POST /v1/runs/{name}/release", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			var req control.ReleaseRequest
			if err := control.Decode(r, &req); err != nil {
				return nil, err
			}
			return d.releaseRun(c, r.PathValue("name"), req.Terminals)
		}},
		{Pattern: "DELETE /v1/runs/{name}", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			return nil, d.endRun(c, r.PathValue("name"))
		}},
		{Pattern: "POST /v1/policy/reload", Handle: func(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
			if d.confined(c) {
				return nil, refuseConfined(c, "reload the policy")
			}
			if !c.IsRoot() {
				return nil, control.Errorf(http.StatusForbidden, "only root may reload the policy")
			}
			if err := d.Reload(); err != nil {
				return nil, control.Errorf(http.StatusUnprocessableEntity, "%v", err)
			}
			return nil, nil
		}},
	}...)
}

// handleStatus shows everything to root and only the caller's own cgroups and connections to
// other users.
func (d *Daemon) handleStatus(ctx context.Context, c control.Caller, r *http.Request) (any, error) {
	rs, err := d.redir.Status()
	if err != nil {
		return nil, err
	}
	st := &control.Status{
		Version:   Version,
		Redirect:  rs,
		Policy:    d.cfg.Policy,
		ProxyPort: d.cfg.ProxyPort,
		AgentCA:   agentCAFile(d.cfg),
		Identity:  d.ids.Provider().Name(),
		Sessions:  d.ids.Sessions(c.UID),
	}
	bindings := d.ids.Bindings(0)
	kids, err := d.subtree.Children()
	if err != nil {
		return nil, err
	}
	visible := map[uint64]bool{}
	for _, k := range kids {
		owner, _ := runOwner(k.Name)
		if owner != c.UID && !c.IsRoot() {
			continue
		}
		visible[k.ID] = true
		cg := control.Cgroup{Name: k.Name, ID: k.ID, Path: k.Path, UID: owner, Session: bindings[k.ID], Procs: []control.Proc{}}
		pids, _ := k.Procs()
		for _, p := range pids {
			cg.Procs = append(cg.Procs, control.Proc{PID: p, Comm: comm(p)})
		}
		st.Cgroups = append(st.Cgroups, cg)
	}
	for _, conn := range d.proxy.Active() {
		if !visible[conn.Origin.CgroupID] && !c.IsRoot() {
			continue
		}
		st.Connections = append(st.Connections, control.Connection{
			ID: conn.ID, Target: conn.Target.Name, Dst: conn.Origin.Dst.String(), PID: conn.Origin.PID,
			Comm: conn.Origin.Comm, CgroupID: conn.Origin.CgroupID, Since: conn.Started.UTC().Format(time.RFC3339),
			Identity: identityLabel(conn.Identity),
		})
	}
	sort.Slice(st.Connections, func(i, j int) bool { return st.Connections[i].ID < st.Connections[j].ID })
	return st, nil
}

func identityLabel(v any) string {
	s, ok := v.(identity.Session)
	if !ok {
		return ""
	}
	if s.Email != "" {
		return s.Email
	}
	return s.Subject
}
