package directory_test

import (
	"testing"

	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/store/postgres"
	"github.com/parley-p2p/parley/internal/pgtest"
)

// envMaker makes a test environment; the API tests take one so that they
// run on SQLite (newEnv) and on PostgreSQL (newPGEnv).
type envMaker func(t *testing.T, mod ...func(*directory.Config)) *env

// newPGEnv is newEnv on a fresh PostgreSQL database.
func newPGEnv(t *testing.T, mod ...func(*directory.Config)) *env {
	t.Helper()
	st, err := postgres.Open(t.Context(), pgtest.NewDatabase(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newEnvOn(t, st, mod...)
}

// TestOnPostgres runs the API tests on PostgreSQL as well.
func TestOnPostgres(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, envMaker)
	}{
		{"LoginLogout", testLoginLogout},
		{"ChangePasswordRevokesOtherTokens", testChangePasswordRevokesOtherTokens},
		{"DeleteAccount", testDeleteAccount},
		{"Devices", testDevices},
		{"ContactsFlowAndConditionalGET", testContactsFlowAndConditionalGET},
		{"Block", testBlock},
		{"PresenceAndOffer", testPresenceAndOffer},
		{"ReconnectReplacesStream", testReconnectReplacesStream},
		{"Mailbox", testMailbox},
		{"SupernodesAndTickets", testSupernodesAndTickets},
		{"CrossAccount", testCrossAccount},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newPGEnv) })
	}
}
