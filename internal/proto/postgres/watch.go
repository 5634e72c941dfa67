package postgres

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// holdWatchAfter is how long a hook may decide before the proxy starts watching the client for a
// disconnect (a hold). Quick decisions never pay for the watch.
const holdWatchAfter = 100 * time.Millisecond

// clientWatch notices a client that goes away while a statement is held: the relay's reader is
// waiting for the hook, not reading the socket, so nothing else would see it.
type clientWatch struct {
	c       *conn
	timer   *time.Timer
	mu      sync.Mutex
	stopped bool
	started bool
	done    chan struct{}
}

// watchDuringHook arms a watch that starts after holdWatchAfter; the caller must call stop when the
// hook returns. It returns nil when the client socket cannot be watched (TLS or non-TCP clients).
func (c *conn) watchDuringHook() *clientWatch {
	if c.clientRaw == nil {
		return nil
	}
	w := &clientWatch{c: c, done: make(chan struct{})}
	w.timer = time.AfterFunc(holdWatchAfter, w.run)
	return w
}

func (w *clientWatch) run() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.started = true
	w.mu.Unlock()
	defer close(w.done)
	gone := false
	// Wait in the netpoller for readiness; poll(2) with POLLRDHUP tells a closed peer apart from
	// pipelined input, which stays unread for the relay.
	w.c.clientRaw.rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
			gone = true
			return true
		}
		return false
	})
	if gone {
		w.c.stop() // cancels the hook's context and closes both sockets
	}
}

// stop ends the watch and waits until it no longer touches the socket.
func (w *clientWatch) stop() {
	if w == nil || w.timer.Stop() {
		return
	}
	w.mu.Lock()
	w.stopped = true
	started := w.started
	w.mu.Unlock()
	if !started {
		return
	}
	w.c.client.SetReadDeadline(time.Unix(1, 0)) // wakes the watch's wait
	<-w.done
	w.c.client.SetReadDeadline(time.Time{})
}
