package control

import (
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Version     string             `json:"version"`
	Redirect    redirect.Status    `json:"redirect"`
	Policy      string             `json:"policy"`
	ProxyPort   uint16             `json:"proxy_port"`
	Identity    string             `json:"identity,omitempty"`
	AgentCA     string             `json:"agent_ca,omitempty"` // the file of the certificate agents trust for HTTPS
	Sessions    []identity.Session `json:"sessions"`
	Cgroups     []Cgroup           `json:"cgroups"`
	Connections []Connection       `json:"connections"`
}

// Cgroup is one enforced cgroup.
type Cgroup struct {
	Name    string `json:"name"`
	ID      uint64 `json:"id"`
	Path    string `json:"path"`
	UID     uint32 `json:"uid"`
	Session string `json:"session,omitempty"`
	Procs   []Proc `json:"procs"`
}

// Proc is a process in an enforced cgroup.
type Proc struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
}

// Connection is one live proxied connection.
type Connection struct {
	ID       uint64 `json:"id"`
	Target   string `json:"target"`
	Dst      string `json:"dst"`
	PID      uint32 `json:"pid"`
	Comm     string `json:"comm"`
	CgroupID uint64 `json:"cgroup_id"`
	Identity string `json:"identity,omitempty"`
	Since    string `json:"since"`
}

// RunRequest asks for a fresh enforced cgroup (POST /v1/runs).
type RunRequest struct {
	Command []string `json:"command"`
}

// Run is an enforced cgroup made for one `enforcer run`.
type Run struct {
	Name string `json:"name"`
	Path string `json:"path"`
	ID   uint64 `json:"id"`
	// AgentCA is the file of the agent CA's certificate, and AgentCABundle that certificate
	// with the system's roots: what the command's TLS clients must trust to call http targets
	// over HTTPS (see AgentCA).
	AgentCA       string `json:"agent_ca,omitempty"`
	AgentCABundle string `json:"agent_ca_bundle,omitempty"`
}

// AgentCA is the answer of GET /v1/agent-ca: the certificate of the authority that signs what
// the proxy shows agents calling http targets over HTTPS, and the files the daemon publishes it
// in, alone and with the system's roots.
type AgentCA struct {
	PEM    string `json:"pem"`
	File   string `json:"file"`
	Bundle string `json:"bundle"`
}

// EnterRequest asks the daemon to move the caller's not-yet-exec'd child into its run cgroup
// (POST /v1/runs/{name}/enter), for callers that may not clone into the cgroup themselves.
type EnterRequest struct {
	PID int `json:"pid"`
}

// ReleaseRequest names the caller's terminals (POST /v1/runs/{name}/release), each by its device
// number as /proc/PID/stat's tty_nr and the TIOCGDEV ioctl encode it: its controlling terminal
// and those its standard descriptors are on. The daemon reads them from the caller itself; those
// named must be among them.
type ReleaseRequest struct {
	Terminals []uint32 `json:"terminals"`
}

// Release is the answer of POST /v1/runs/{name}/release.
type Release struct {
	// Killed lists the processes of the run found attached to the caller's terminals; the
	// whole run was killed for them (RunKilled says so).
	Killed []int `json:"killed"`
	// RunKilled, when set, says why every process of the run was killed, those that had
	// detached too.
	RunKilled string `json:"run_killed,omitempty"`
}

// LoginRequest carries the tokens the CLI obtained (POST /v1/login); the daemon verifies them.
// With the local provider the body is {} and the caller's Unix identity is used.
type LoginRequest struct {
	Tokens *identity.TokenSet `json:"tokens,omitempty"`
}

// LogoutRequest ends one session, or all of the caller's when Session is empty.
type LogoutRequest struct {
	Session string `json:"session,omitempty"`
}

// Sessions is the answer of GET /v1/sessions.
type Sessions struct {
	Provider string             `json:"provider"`
	Sessions []identity.Session `json:"sessions"`
	Bindings map[string]string  `json:"bindings"` // cgroup id → session id
}

// BindRequest enrols an existing cgroup under the enforcement subtree with a workload identity
// read from a token file (POST /v1/bind, root only).
type BindRequest struct {
	Cgroup    string `json:"cgroup"`
	TokenFile string `json:"token_file"`
}

// DecideRequest carries a reviewer's reason (POST /v1/approvals/{id}/approve|deny).
type DecideRequest struct {
	Reason string `json:"reason,omitempty"`
}
