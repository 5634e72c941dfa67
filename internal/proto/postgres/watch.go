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

// startJudging marks the start of a hook call. Calls are numbered rather than timed: the watchdog
// needs only to see the same call running at two of its ticks, and a clock read per statement
// would cost more.
func (c *conn) startJudging() {
	c.judgeSeq++
	c.judging.Store(c.judgeSeq)
}

// endJudging marks its end and stops a watch the watchdog started, before the relay reads again.
func (c *conn) endJudging() {
	c.judging.Store(0)
	if !c.watched.Load() {
		return // see startWatch for why this cannot miss a watch
	}
	c.stopWatch()
}

// stopWatch ends the running watch, if any, and waits for it.
func (c *conn) stopWatch() {
	c.watchMu.Lock()
	f, done := c.watchFile, c.watchDone
	c.watchFile = nil
	c.watched.Store(false)
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
	type heldCall struct {
		c   *conn
		seq uint64
	}
	var held []heldCall
	for range t.C {
		held = held[:0]
		s.mu.Lock()
		if len(s.sessions) == 0 {
			s.watching = false
			s.mu.Unlock()
			return
		}
		for _, c := range s.sessions {
			// A call seen at two ticks has run for at least holdWatchAfter.
			seq := c.judging.Load()
			if seq != 0 && seq == c.watchSeen {
				held = append(held, heldCall{c, seq})
			}
			c.watchSeen = seq
		}
		s.mu.Unlock()
		for _, h := range held {
			h.c.startWatch(h.seq)
		}
	}
}

// startWatch watches the client of a held statement (hook call seq) until it disconnects (which
// ends the session and so cancels the hook's context) or endJudging stops the watch. It waits on a
// second descriptor of the client socket: the relay's resident reader owns the first one's
// readiness (see rawIO).
//
// endJudging clears judging and then reads watched; startWatch sets watched and then reads
// judging. Whichever goes second sees the other's write, so a watch that starts as its call ends
// is stopped by one of them.
func (c *conn) startWatch(seq uint64) {
	if c.clientRaw == nil {
		return // TLS or non-TCP client: only CancelRequest and shutdown end a hold
	}
	c.watchMu.Lock()
	started := c.watchLocked(seq)
	c.watchMu.Unlock()
	if started && c.judging.Load() != seq {
		c.stopWatch()
	}
}

// watchLocked starts the watch; false if it did not.
func (c *conn) watchLocked(seq uint64) bool {
	if c.watchFile != nil || c.judging.Load() != seq {
		return false
	}
	// Without a descriptor (out of them) the hold goes unwatched, as for a TLS client.
	f, err := c.clientRaw.dup()
	if err != nil {
		return false
	}
	rc, err := f.SyscallConn()
	if err == nil {
		err = f.SetReadDeadline(time.Time{}) // fails unless f is in the netpoller
	}
	if err != nil {
		f.Close()
		return false
	}
	done := make(chan struct{})
	c.watchFile, c.watchDone = f, done
	c.watched.Store(true)
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
	return true
}
