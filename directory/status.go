package directory

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/parley-p2p/parley/directory/dashboard"
)

type statusJSON struct {
	OnlineDevices   int               `json:"online_devices"`
	StreamsHere     int               `json:"streams_here"`
	OffersPerMinute int               `json:"offers_per_minute"`
	Direct          int               `json:"direct_sessions"`
	Relayed         int               `json:"relayed_sessions"`
	Supernodes      []statusSupernode `json:"supernodes"`
	ServerTime      time.Time         `json:"server_time"`
}

type statusSupernode struct {
	Key      string `json:"key"` // first 8 characters of the device key
	Load     int    `json:"load"`
	Sessions int    `json:"sessions"`
}

// snapshot gathers the dashboard's figures. Online devices and supernodes
// come from the database (all processes); offers and session paths are
// this process's own.
func (s *Server) snapshot(ctx context.Context) (statusJSON, error) {
	now := s.now()
	st := statusJSON{StreamsHere: s.hub.count(), OffersPerMinute: s.stats.offersPerMinute(now), ServerTime: now.UTC(), Supernodes: []statusSupernode{}}
	st.Direct, st.Relayed = s.stats.sessions()
	var err error
	if st.OnlineDevices, err = s.store.CountOnline(ctx); err != nil {
		return st, err
	}
	sns, err := s.store.Supernodes(ctx, now.Add(-s.cfg.SupernodeTTL))
	if err != nil {
		return st, err
	}
	for _, sn := range sns {
		st.Supernodes = append(st.Supernodes, statusSupernode{Key: keyString(sn.PublicKey)[:8], Load: sn.Load, Sessions: sn.Sessions})
	}
	return st, nil
}

// status: GET /v1/status, public.
func (s *Server) status(w http.ResponseWriter, r *http.Request) *apiError {
	st, err := s.snapshot(r.Context())
	if err != nil {
		return s.internal(r, "status", err)
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// statusStream: GET /v1/status/stream, Server-Sent Events carrying the
// status once a second, for the dashboard.
func (s *Server) statusStream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		st, err := s.snapshot(r.Context())
		if err == nil {
			// SSE frames are not bounded by the server's WriteTimeout.
			rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprintf(w, "data: %s\n\n", mustJSON(st)); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func dashboardHandler() http.Handler { return dashboard.Handler() }
