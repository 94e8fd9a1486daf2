package directory_test

import (
	"net/http/httptest"
	"testing"
)

// BenchmarkContactList measures the handler cost of an authenticated,
// cached contact-list read, without the network.
func BenchmarkContactList(b *testing.B) {
	e := newEnvB(b)
	a, _ := e.userB(b, "alice")
	for i := range 20 {
		c, _ := e.userB(b, "bob"+string(rune('a'+i)))
		befriendB(b, a, c, "bob"+string(rune('a'+i)), "alice")
	}
	req := httptest.NewRequest("GET", "/v1/contacts", nil)
	req.Header.Set("Authorization", "Bearer "+a.Token)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}
