package lab

import (
	"os"
	"testing"
)

// NewTest returns a new Lab that is closed when t ends. When this machine
// cannot run a lab (see Check) it skips t with the reason, except when the
// environment has CI=true, where the suite must not silently lose its
// real-network tests: then it fails t.
func NewTest(t testing.TB, cfg Config) *Lab {
	t.Helper()
	Require(t)
	l, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// Require skips t, or fails it when CI=true, unless this machine can run a
// lab.
func Require(t testing.TB) {
	t.Helper()
	if err := Check(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: real-kernel lab tests must run)", err)
		}
		t.Skipf("%v; skipping real-kernel lab test", err)
	}
}
