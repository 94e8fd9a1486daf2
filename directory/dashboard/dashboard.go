// Package dashboard holds the directory server's status page: static
// assets embedded in the binary (nothing is loaded from the internet) that
// read the server's GET /v1/status/stream and update live.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// Handler serves the page at / and its assets.
func Handler() http.Handler {
	sub, _ := fs.Sub(assets, "assets")
	fsrv := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		fsrv.ServeHTTP(w, r)
	})
}
