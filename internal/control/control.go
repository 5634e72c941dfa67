// Package control is the daemon's local API: HTTP/JSON on a unix socket, callers identified by
// SO_PEERCRED, and the Go client the CLI uses. It holds no business logic: handlers decode,
// check who is asking, call the Backend and encode.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where the daemon listens unless its configuration says otherwise.
const DefaultSocket = "/run/enforcer/enforcer.sock"

// Caller is the peer process of a request, as the kernel reports it.
type Caller struct {
	PID int32
	UID uint32
	GID uint32
	// Cgroup is the caller's cgroup v2 path as its /proc/PID/cgroup gives it ("/a/b"), read when
	// it connected; "" when that could not be read for the process that connected (it exited,
	// say), which callers must treat as the most confined place it could be.
	Cgroup string
	// Pidfd is a pidfd of the process that connected, taken by the kernel when it connected
	// (SO_PEERPIDFD, Linux 6.5+) and open while its requests are served: what is read of
	// /proc/PID is about that process if Pidfd still names a live process after the read. nil
	// when the kernel gave none.
	Pidfd *os.File `json:"-"`
}

// IsRoot reports whether the caller runs as uid 0.
func (c Caller) IsRoot() bool { return c.UID == 0 }

// Error is an error with the HTTP status the API returns for it.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
	// RetryAfter, if set, is sent as the Retry-After header (whole seconds, rounded up).
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an Error.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

type callerKey struct{}

// CallerFrom returns the caller of a request served by Serve.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Route is one API endpoint.
type Route struct {
	Pattern string // net/http pattern, e.g. "POST /v1/runs"
	// Handle decodes nothing itself: in is a pointer to the request body type (or nil for none).
	Handle func(ctx context.Context, c Caller, r *http.Request) (any, error)
}

// Listen creates the unix socket at path (parent 0755, socket 0666: any local user may ask;
// every endpoint authorises by peer uid).
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket mode: %w", err)
	}
	return ln, nil
}

// Serve serves routes on ln until ctx ends. confined, if not nil, tells enforced callers apart:
// their connections count apart from the rest of their user's, so an agent that runs as the
// developer and holds every connection it may cannot lock the developer out of `enforcer logout`
// or of deciding approvals.
func Serve(ctx context.Context, ln net.Listener, routes []Route, log *slog.Logger, confined func(Caller) bool) error {
	return serve(ctx, ln, routes, log, confined, requestTimeout)
}

// serve is Serve with the time one request may take to arrive and its answer to leave.
func serve(ctx context.Context, ln net.Listener, routes []Route, log *slog.Logger, confined func(Caller) bool, timeout time.Duration) error {
	mux := http.NewServeMux()
	for _, rt := range routes {
		rt := rt
		mux.HandleFunc(rt.Pattern, func(w http.ResponseWriter, r *http.Request) {
			c, ok := CallerFrom(r.Context())
			if !ok {
				writeJSON(w, http.StatusForbidden, &Error{Message: "caller unknown"})
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			out, err := rt.Handle(r.Context(), c, r)
			if err != nil {
				var ce *Error
				if !errors.As(err, &ce) {
					log.Error("control request failed", "route", rt.Pattern, "uid", c.UID, "err", err)
					ce = &Error{Status: http.StatusInternalServerError, Message: err.Error()}
				}
				if ce.RetryAfter > 0 {
					w.Header().Set("Retry-After", strconv.Itoa(int((ce.RetryAfter+time.Second-1)/time.Second)))
				}
				writeJSON(w, ce.Status, ce)
				return
			}
			if out == nil {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			writeJSON(w, http.StatusOK, out)
		})
	}
	limit := newPeerLimit(MaxConnsPerUser)
	pidfds := &connPidfds{byConn: map[net.Conn]*os.File{}}
	srv := &http.Server{
		Handler: mux,
		// No request is a long poll: a peer that sends a request slowly, or holds a connection
		// idle, only holds a slot.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       timeout,
		WriteTimeout:      timeout,
		IdleTimeout:       2 * timeout,
		ConnState: func(conn net.Conn, st http.ConnState) {
			limit.state(conn, st)
			pidfds.state(conn, st)
		},
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			uc, ok := conn.(*net.UnixConn)
			if !ok {
				return ctx
			}
			raw, err := uc.SyscallConn()
			if err != nil {
				return ctx
			}
			var cred *unix.Ucred
			pidfd := -1
			raw.Control(func(fd uintptr) {
				cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
				if err == nil {
					pidfd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
				}
			})
			if err != nil || cred == nil {
				if pidfd >= 0 {
					unix.Close(pidfd)
				}
				return ctx
			}
			c := Caller{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, Cgroup: peerCgroup(cred.Pid, pidfd)}
			if pidfd >= 0 {
				c.Pidfd = os.NewFile(uintptr(pidfd), fmt.Sprintf("pidfd:%d", cred.Pid))
				pidfds.hold(conn, c.Pidfd)
			}
			key := peerKey{uid: c.UID, confined: confined != nil && confined(c)}
			if !limit.admit(conn, key) {
				log.Warn("control socket: too many connections from one user; refusing more", "uid", c.UID, "confined", key.confined, "limit", MaxConnsPerUser)
				conn.Close()
				return ctx
			}
			return context.WithValue(ctx, callerKey{}, c)
		},
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// requestTimeout bounds how long one request may take to arrive and its answer to leave.
const requestTimeout = 30 * time.Second

// MaxConnsPerUser bounds the connections one user other than root may hold open on the control
// socket (mode 0666), and as many again from its enforced processes: without it, any local user,
// enforced agents included, could take every file descriptor the daemon has and leave the proxy,
// the session log and everyone's CLI without.
const MaxConnsPerUser = 32

// peerKey is what the limit counts by: a user, its enforced processes apart from its others.
type peerKey struct {
	uid      uint32
	confined bool
}

// peerLimit counts open connections per peerKey.
type peerLimit struct {
	max   int
	mu    sync.Mutex
	byKey map[peerKey]int
	conns map[net.Conn]peerKey
}

func newPeerLimit(max int) *peerLimit {
	return &peerLimit{max: max, byKey: map[peerKey]int{}, conns: map[net.Conn]peerKey{}}
}

// admit counts conn for key, or refuses it when key holds the most it may (root is not counted:
// it owns the daemon anyway).
func (l *peerLimit) admit(conn net.Conn, key peerKey) bool {
	if key.uid == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byKey[key] >= l.max {
		return false
	}
	l.byKey[key]++
	l.conns[conn] = key
	return true
}

// state forgets a connection once it is closed.
func (l *peerLimit) state(conn net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	key, ok := l.conns[conn]
	if !ok {
		return
	}
	delete(l.conns, conn)
	if l.byKey[key]--; l.byKey[key] == 0 {
		delete(l.byKey, key)
	}
}

// connPidfds holds the pidfd of each connection's peer until the connection is closed, after its
// last request was served.
type connPidfds struct {
	mu     sync.Mutex
	byConn map[net.Conn]*os.File
}

func (p *connPidfds) hold(conn net.Conn, pidfd *os.File) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byConn[conn] = pidfd
}

func (p *connPidfds) state(conn net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.byConn[conn]; ok {
		f.Close()
		delete(p.byConn, conn)
	}
}

// peerCgroup reads the cgroup of the process pid, which connected. The pidfd the kernel took at
// connect time (kernels 6.5 and later) tells whether pid still names that process after the
// read; without one, a process that exited and whose pid was reused before the read could be
// taken for another, which the socket's short accept-to-read window makes unlikely but not
// impossible.
func peerCgroup(pid int32, pidfd int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	if pidfd >= 0 && unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil {
		return ""
	}
	return UnifiedCgroup(string(b))
}

// UnifiedCgroup returns the cgroup v2 path in the text of a /proc/PID/cgroup file (its "0::"
// line), or "" when there is none.
func UnifiedCgroup(procCgroup string) string {
	for line := range strings.SplitSeq(procCgroup, "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(p, "/") {
			return p
		}
	}
	return ""
}

// Decode reads a JSON request body into v, refusing unknown fields.
func Decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(http.StatusBadRequest, "bad request body: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
