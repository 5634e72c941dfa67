package approval

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// stallRelay forwards TCP connections on loopback to a server until stall is called; from then on
// it forwards nothing and closes nothing, as a partitioned network or a hung server would, until
// close drops every connection.
type stallRelay struct {
	ln      net.Listener
	stalled chan struct{}
	once    sync.Once
	close   func()
}

func newStallRelay(t *testing.T, to string) *stallRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &stallRelay{ln: ln, stalled: make(chan struct{})}
	done := make(chan struct{})
	var conns []net.Conn
	var mu sync.Mutex
	r.close = sync.OnceFunc(func() {
		close(done)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			select {
			case <-r.stalled:
				<-done // hold the bytes; the peer waits forever
				return
			default:
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if err != io.EOF {
					dst.Close()
				}
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return r
}

func (r *stallRelay) stall() { r.once.Do(func() { close(r.stalled) }) }

func (r *stallRelay) port() string { return strconv.Itoa(r.ln.Addr().(*net.TCPAddr).Port) }

// A fleet store that stops answering (network partition, hung server) does not hold a waiting
// statement past its timeout: the statement is refused, and the daemon's waiter returns.
func TestPGStoreHungStoreDoesNotHoldWaiterPastTimeout(t *testing.T) {
	srv := pgtest.Start(t, pgtest.WithSetting("fsync", "off"))
	relay := newStallRelay(t, srv.Addr.String())
	dsn := newPGDatabase(t, srv) + " host=127.0.0.1 port=" + relay.port()
	store := openPG(t, dsn, "host-a")
	t.Cleanup(relay.close) // first: a store cannot close while a query hangs
	b := NewBroker(store, Config{Owner: "host-a", Timeout: time.Second, PollInterval: 50 * time.Millisecond})

	h := hold(t, context.Background(), b, updateSpec("1"))
	relay.stall()
	select {
	case res := <-h.done:
		if res.out.Approved() {
			t.Fatalf("approved with the store unreachable: %+v", res.out)
		}
	case <-time.After(deadline):
		t.Fatalf("the waiter is still blocked on the hung store %s after a 1s timeout", deadline)
	}

	// A new statement is refused too, within its timeout, rather than hanging on the store.
	done := make(chan result, 1)
	go func() {
		out, err := b.Request(context.Background(), updateSpec("2"), nil)
		done <- result{out, err}
	}()
	select {
	case res := <-done:
		if res.err == nil || res.out.Approved() {
			t.Fatalf("a new request with the store hung: %+v, %v", res.out, res.err)
		}
	case <-time.After(deadline):
		t.Fatalf("a new request is still blocked on the hung store %s after a 1s timeout", deadline)
	}
}

// Two daemons sharing a fleet store: one late grant lets exactly one retry through however many
// race for it on either host, and racing reviewers on two hosts leave exactly one decision.
func TestPGStoreRacesHaveOneWinner(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t, pgtest.WithSetting("fsync", "off"))
	dsn := newPGDatabase(t, srv)
	a := NewBroker(openPG(t, dsn, "host-a"), Config{Owner: "host-a", Timeout: 100 * time.Millisecond})
	b := NewBroker(openPG(t, dsn, "host-b"), Config{Owner: "host-b", Timeout: 100 * time.Millisecond})

	h := hold(t, ctx, a, updateSpec("1"))
	if out := h.wait(t); out.State != StateExpired {
		t.Fatalf("first try %s", out.State)
	}
	if _, err := b.Approve(ctx, h.id, bob, "late"); err != nil {
		t.Fatal(err)
	}
	const n = 8
	results := make(chan Outcome, n)
	for i := range n {
		br := a
		if i%2 == 1 {
			br = b
		}
		go func() {
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			out, err := br.Request(cctx, updateSpec("1"), func(*Request) error { cancel(); return nil })
			if err != nil {
				t.Error(err)
			}
			results <- out
		}()
	}
	granted := 0
	for range n {
		if out := <-results; out.Approved() {
			granted++
			if out.Grant == nil || out.Grant.RequestID != h.id {
				t.Errorf("approved without the grant: %+v", out)
			}
		}
	}
	if granted != 1 {
		t.Errorf("%d retries passed on one grant, want 1", granted)
	}

	// An approver on A and a denier on B decide the same pending request at once.
	spec := updateSpec("2")
	spec.Timeout = time.Minute
	long := NewBroker(openPG(t, dsn, "host-c"), Config{Owner: "host-c"})
	p := hold(t, ctx, long, spec)
	errs := make(chan error, 2)
	go func() { _, err := a.Approve(ctx, p.id, bob, ""); errs <- err }()
	go func() { _, err := b.Deny(ctx, p.id, dave, "no"); errs <- err }()
	e1, e2 := <-errs, <-errs
	if (e1 == nil) == (e2 == nil) {
		t.Fatalf("both or neither decision taken: %v, %v", e1, e2)
	}
	out := p.wait(t)
	r, err := a.Get(ctx, p.id)
	if err != nil || len(r.Decisions) != 1 || r.State != out.State {
		t.Fatalf("stored %+v (%v), waiter saw %s", r, err, out.State)
	}
}
