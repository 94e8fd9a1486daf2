package directory

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus metrics, served on /metrics.
type metrics struct {
	requests        *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	streams         prometheus.Gauge
	logins          *prometheus.CounterVec
	rateLimited     prometheus.Counter
	presenceChanges prometheus.Counter
	offers          prometheus.Counter
	mailboxPuts     prometheus.Counter
	dialbacks       *prometheus.CounterVec
	tickets         prometheus.Counter
	broadcastErrors prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, s *Server) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_directory_http_requests_total", Help: "HTTP API requests by route and status.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "parley_directory_http_request_seconds", Help: "HTTP API request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"route"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_directory_event_streams", Help: "Event streams held by this process.",
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_directory_logins_total", Help: "Login attempts by result.",
		}, []string{"result"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_directory_rate_limited_total", Help: "Requests refused by a rate limit.",
		}),
		presenceChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_directory_presence_changes_total", Help: "Devices coming online or going offline on this process.",
		}),
		offers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_directory_offers_total", Help: "Connection offers relayed.",
		}),
		mailboxPuts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_directory_mailbox_puts_total", Help: "Blobs stored in mailboxes.",
		}),
		dialbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_directory_dialbacks_total", Help: "Supernode dial-back verifications by result.",
		}, []string{"result"}),
		tickets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_directory_relay_tickets_total", Help: "Relay tickets issued.",
		}),
		broadcastErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_directory_broadcast_errors_total", Help: "Broadcasts that could not be published.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.streams, m.logins, m.rateLimited, m.presenceChanges,
		m.offers, m.mailboxPuts, m.dialbacks, m.tickets, m.broadcastErrors)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_directory_online_devices", Help: "Devices online on all processes sharing the database.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, err := s.store.CountOnline(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	}))
	return m
}

func (m *metrics) observe(route string, status int, d time.Duration) {
	if status == 0 {
		status = 200
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

// stats are the dashboard's per-process counters: offers per minute and the
// paths sessions report (direct or relayed).
type stats struct {
	mu     sync.Mutex // protects the fields below
	offers []time.Time
	paths  map[[2]int64]string // (reporting device, peer device) → path
}

func (st *stats) offer(now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.offers = append(st.offers, now)
	st.trimLocked(now)
}

func (st *stats) trimLocked(now time.Time) {
	i := 0
	for i < len(st.offers) && now.Sub(st.offers[i]) > time.Minute {
		i++
	}
	st.offers = st.offers[i:]
}

func (st *stats) offersPerMinute(now time.Time) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.trimLocked(now)
	return len(st.offers)
}

func (st *stats) setPath(dev, peer int64, path string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.paths == nil {
		st.paths = make(map[[2]int64]string)
	}
	if path == "closed" {
		delete(st.paths, [2]int64{dev, peer})
		return
	}
	st.paths[[2]int64{dev, peer}] = path
}

func (st *stats) dropDevice(dev int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for k := range st.paths {
		if k[0] == dev {
			delete(st.paths, k)
		}
	}
}

// sessions counts session paths; a pair reported by both sides counts once.
func (st *stats) sessions() (direct, relayed int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, p := range st.paths {
		if other, ok := st.paths[[2]int64{k[1], k[0]}]; ok && k[0] > k[1] && other == p {
			continue
		}
		if p == "direct" {
			direct++
		} else {
			relayed++
		}
	}
	return direct, relayed
}
