package postgres

import (
	"time"

	"golang.org/x/sys/unix"
)

// holdWatchAfter is how long a hook may decide before the proxy starts watching the client for a
// disconnect (a hold). Quick decisions never pay for the watch.
const holdWatchAfter = 100 * time.Millisecond

// The relay's reader waits for the hook while a statement is held, not reading the client socket,
// so nothing would notice the client going away. One watchdog goroutine per Server, running only
// while sessions exist, looks every holdWatchAfter for hook calls older than that and watches those
// clients. A per-statement timer would cost more than it saves: arming one interrupts the netpoller
// and adds a thread wake-up to every statement.

// startJudging marks the start of a hook call.
func (c *conn) startJudging() { c.judgeStart.Store(time.Now().UnixNano()) }

// endJudging marks its end and stops a watch the watchdog started, before the relay reads again.
func (c *conn) endJudging() {
	c.judgeStart.Store(0)
	c.watchMu.Lock()
	f, done := c.watchFile, c.watchDone
	c.watchFile = nil
	c.watchMu.Unlock()
	if f == nil {
		return
	}
	f.SetReadDeadline(longAgo) // wakes the watch's wait
	<-done
}

// watchdog runs while the server has sessions.
func (s *Server) watchdog() {
	t := time.NewTicker(holdWatchAfter)
	defer t.Stop()
	var held []*conn
	for range t.C {
		now := time.Now().UnixNano()
		held = held[:0]
		s.mu.Lock()
		if len(s.sessions) == 0 {
			s.watching = false
			s.mu.Unlock()
			return
		}
		for _, c := range s.sessions {
			if st := c.judgeStart.Load(); st != 0 && now-st >= int64(holdWatchAfter) {
				held = append(held, c)
			}
		}
		s.mu.Unlock()
		for _, c := range held {
			c.startWatch()
		}
	}
}

// startWatch watches the client of a held statement until it disconnects (which ends the session
// and so cancels the hook's context) or endJudging stops the watch. It waits on a second descriptor
// of the client socket: the relay's resident reader owns the first one's readiness (see rawIO).
func (c *conn) startWatch() {
	if c.clientRaw == nil {
		return // TLS or non-TCP client: only CancelRequest and shutdown end a hold
	}
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.watchFile != nil || c.judgeStart.Load() == 0 {
		return
	}
	// Without a descriptor (out of them) the hold goes unwatched, as for a TLS client.
	f, err := c.clientRaw.dup()
	if err != nil {
		return
	}
	rc, err := f.SyscallConn()
	if err == nil {
		err = f.SetReadDeadline(time.Time{}) // fails unless f is in the netpoller
	}
	if err != nil {
		f.Close()
		return
	}
	done := make(chan struct{})
	c.watchFile, c.watchDone = f, done
	go func() {
		defer close(done)
		defer f.Close()
		gone := false
		// Wait in the netpoller for readiness; poll(2) with POLLRDHUP tells a closed peer apart
		// from pipelined input, which stays unread for the relay.
		rc.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
			if n, err := unix.Poll(fds, 0); err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
				gone = true
				return true
			}
			return false
		})
		if gone {
			c.stop() // cancels the hook's context and closes both sockets
		}
	}()
}
