package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/enforcer-dev/enforcer/internal/metrics"
)

// Relay serves "tcp" and "tls-passthrough" targets: bytes are copied unchanged both ways. Between
// two TCP sockets io.Copy uses splice(2), so the payload never enters user memory.
type Relay struct {
	Metrics     *metrics.Metrics
	DialTimeout time.Duration
	// Observe, if set, is told about each relayed connection when it starts; the function it
	// returns gets the byte counts when it ends (the session recorder).
	Observe func(c *Conn) func(up, down int64, err error)
}

// Serve implements Handler.
func (r *Relay) Serve(ctx context.Context, c *Conn) (err error) {
	var nUp, nDown int64
	if r.Observe != nil {
		done := r.Observe(c)
		defer func() { done(nUp, nDown, err) }()
	}
	timeout := r.DialTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: timeout}
	up, err := d.DialContext(ctx, "tcp", UpstreamAddr(c))
	if err != nil {
		return fmt.Errorf("dial upstream %s: %w", UpstreamAddr(c), err)
	}
	upTCP := up.(*net.TCPConn)
	defer upTCP.Close()
	if len(c.Peeked) > 0 {
		if _, err := upTCP.Write(c.Peeked); err != nil {
			return fmt.Errorf("write ClientHello upstream: %w", err)
		}
	}
	stop := context.AfterFunc(ctx, func() { c.Close(); upTCP.Close() })
	defer stop()

	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(c.Client, upTCP)
		c.Client.CloseWrite()
		done <- n
	}()
	nUp, _ = io.Copy(upTCP, c.Client)
	nUp += int64(len(c.Peeked))
	upTCP.CloseWrite()
	nDown = <-done
	name := c.Target.Name
	r.Metrics.Bytes.WithLabelValues(name, "up").Add(float64(nUp))
	r.Metrics.Bytes.WithLabelValues(name, "down").Add(float64(nDown))
	return nil
}
