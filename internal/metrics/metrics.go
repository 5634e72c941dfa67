// Package metrics holds the daemon's Prometheus registry and serves it on a loopback address.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the daemon's counters. The zero value is not usable; call New.
type Metrics struct {
	Registry      *prometheus.Registry
	Connections   *prometheus.CounterVec // by target and verdict
	Bytes         *prometheus.CounterVec // by target and direction (up = agent→service)
	Active        *prometheus.GaugeVec   // by target
	OriginMisses  prometheus.Counter
	Statements    *prometheus.CounterVec // by target and verdict
	RuleDecisions *prometheus.CounterVec // by rule and action
}

// New builds a registry with the daemon's metrics and the Go runtime collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enforcer_connections_total",
			Help: "Connections accepted from enforced processes, by target and verdict (allowed, denied, unauthenticated, too_many, error).",
		}, []string{"target", "verdict"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enforcer_bytes_total",
			Help: "Bytes relayed, by target and direction (up: agent to service, down: service to agent).",
		}, []string{"target", "direction"}),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "enforcer_active_connections",
			Help: "Connections currently relayed, by target.",
		}, []string{"target"}),
		OriginMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "enforcer_origin_lookup_misses_total",
			Help: "Accepted connections refused because no origin record existed (not from an enforced cgroup).",
		}),
		Statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enforcer_statements_total",
			Help: "Statements seen by protocol handlers, by target and verdict.",
		}, []string{"target", "verdict"}),
		RuleDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enforcer_rule_decisions_total",
			Help: "Policy rule decisions, by rule and action.",
		}, []string{"rule", "action"}),
	}
	m.Registry.MustRegister(m.Connections, m.Bytes, m.Active, m.OriginMisses, m.Statements, m.RuleDecisions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Serve serves /metrics on addr, which must be a loopback address, until ctx ends, and with
// profiles Go's profiles under /debug/pprof (any local user can reach a loopback port).
func (m *Metrics) Serve(ctx context.Context, addr string, profiles bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("metrics address %q: must be a loopback IP", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listen: %w", err)
	}
	return m.serve(ctx, ln, profiles)
}

// serve serves on ln (see Serve).
func (m *Metrics) serve(ctx context.Context, ln net.Listener, profiles bool) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	if profiles {
		// For operators chasing a slow path, who asked for them (pprof: true).
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
