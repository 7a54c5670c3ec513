package signer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus collectors of one server (own registry, no globals).
type Metrics struct {
	Registry     *prometheus.Registry
	Requests     *prometheus.CounterVec   // endpoint, outcome (code or "ok")
	SignLatency  *prometheus.HistogramVec // key, algorithm: one HSM signature
	HSMErrors    *prometheus.CounterVec   // key
	AuditFsync   prometheus.Histogram
	AuditBatch   prometheus.Histogram
	CertDaysLeft *prometheus.GaugeVec // key
}

// NewMetrics registers the collectors.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signetd_requests_total", Help: "API requests by endpoint and outcome (ok or error code).",
	}, []string{"endpoint", "outcome"})
	m.SignLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "signetd_sign_seconds", Help: "Latency of one signature by the key backend.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"key", "algorithm"})
	m.HSMErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signetd_hsm_errors_total", Help: "Signing errors returned by the key backend.",
	}, []string{"key"})
	m.AuditFsync = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "signetd_audit_fsync_seconds", Help: "Latency of the audit log fsync (one per group commit).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.AuditBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "signetd_audit_batch_records", Help: "Records written per audit group commit.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11),
	})
	m.CertDaysLeft = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "signetd_certificate_days_left", Help: "Days until the key's certificate chain expires (negative: expired).",
	}, []string{"key"})
	m.Registry.MustRegister(m.Requests, m.SignLatency, m.HSMErrors, m.AuditFsync, m.AuditBatch, m.CertDaysLeft,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) fsyncHook(d time.Duration, n int) {
	m.AuditFsync.Observe(d.Seconds())
	m.AuditBatch.Observe(float64(n))
}
