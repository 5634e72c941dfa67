package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/enforcer-dev/enforcer/internal/policy"
)

// registerStats exports the counters the libraries keep themselves: the session log, masking
// and approvals.
func (d *Daemon) registerStats() {
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	d.metrics.Registry.MustRegister(
		counter("enforcer_record_records_total", "Records written to the session log.", func() uint64 { return d.records.Stats().Records }),
		counter("enforcer_record_fsyncs_total", "fdatasync calls on the session log.", func() uint64 { return d.records.Stats().Fsyncs }),
		counter("enforcer_record_bytes_total", "Bytes written to the session log's segments.", func() uint64 { return d.records.Stats().Bytes }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "enforcer_record_write_seconds_total", Help: "Time the session log's writer spent writing segments (write(2), page cache included)."},
			func() float64 { return float64(d.records.Stats().WriteNS) / 1e9 }),
		counter("enforcer_record_failures_total", "Appends refused because the session log could not be written.", func() uint64 { return d.records.Stats().Failures }),
		counter("enforcer_mask_failures_total", "Values that could not be masked and were withheld.", func() uint64 { return policy.MaskStats.Snapshot().Failures }),
		counter("enforcer_mask_nulled_total", "Binary cells sent as NULL: under a column rule, or holding a detector's finding.", func() uint64 { return policy.MaskStats.Snapshot().Nulled }),
		counter("enforcer_approvals_created_total", "Statements held for approval.", func() uint64 { return d.approvals.Stats().Created }),
		counter("enforcer_approvals_approved_total", "Held statements approved.", func() uint64 { return d.approvals.Stats().Approved }),
		counter("enforcer_approvals_denied_total", "Held statements denied.", func() uint64 { return d.approvals.Stats().Denied }),
		counter("enforcer_approvals_expired_total", "Held statements that timed out.", func() uint64 { return d.approvals.Stats().Expired }),
		counter("enforcer_approvals_too_many_total", "Statements refused because their person had too many awaiting review.", func() uint64 { return d.approvals.Stats().TooMany }),
		counter("enforcer_approvals_rate_limited_total", "Statements refused because their person asked for review too often.", func() uint64 { return d.approvals.Stats().RateLimited }),
		counter("enforcer_approvals_webhook_dropped_total", "Approval webhook deliveries dropped because the endpoint's queue was full.", func() uint64 { return d.approvals.Stats().WebhookDropped }),
	)
	gauge := func(name, help string, f func() bool) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if f() {
				return 1
			}
			return 0
		})
	}
	d.metrics.Registry.MustRegister(
		gauge("enforcer_record_sync_ring", "1 while the session log's syncs go through io_uring, 0 once the writer makes them itself.", func() bool { return d.records.Stats().SyncRing }),
		gauge("enforcer_record_blocking_writes", "1 once a session log write waited for the storage and later writes hold a thread each.", func() bool { return d.records.Stats().BlockingWrites }),
	)
	if s := shipped.Load(); s != nil {
		d.metrics.Registry.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "enforcer_fleet_records_shipped_seq", Help: "The session log's seq up to which the fleet sink has shipped."},
				func() float64 { return float64(s.Stats().Shipped) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "enforcer_fleet_records_unshipped", Help: "Durable session log records the fleet sink has not shipped yet."},
				func() float64 { return float64(d.records.Durable() - min(s.Stats().Shipped, d.records.Durable())) }),
			counter("enforcer_fleet_records_rows_total", "Rows sent to the fleet database (resent ones included).", func() uint64 { return s.Stats().Rows }),
			counter("enforcer_fleet_records_failures_total", "Failed attempts to ship records to the fleet database (each retried).", func() uint64 { return s.Stats().Failures }),
			counter("enforcer_fleet_records_lost_total", "Session log records deleted before the fleet sink shipped them.", func() uint64 { return s.Stats().Lost }),
		)
	}
	hits := prometheus.NewDesc("enforcer_mask_hits_total", "Values masked, by detector kind or column rule.", []string{"kind"}, nil)
	d.metrics.Registry.MustRegister(&funcCollector{desc: hits, collect: func(ch chan<- prometheus.Metric) {
		for kind, n := range policy.MaskStats.Snapshot().Hits {
			ch <- prometheus.MustNewConstMetric(hits, prometheus.CounterValue, float64(n), kind)
		}
	}})
}

type funcCollector struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *funcCollector) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
