package directory_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/directory/store"
	"github.com/parley-p2p/parley/directory/ticket"
)

func TestPresenceAndOffer(t *testing.T) { testPresenceAndOffer(t, newEnv) }

func testPresenceAndOffer(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	ctx := t.Context()
	a, aKey := e.user("alice")
	b, bKey := e.user("bob")
	befriend(t, a, b, "bob", "alice")
	bs := events(t, b)
	as := events(t, a)
	ev := nextEvent(t, bs, "presence")
	if ev.Username != "alice" || !ev.Online || *ev.Device != aKey {
		t.Fatalf("presence %+v", ev)
	}
	relay := newKey(t)
	offer := client.Offer{To: bKey, Kind: "offer", Session: "s1", Candidates: []string{"192.0.2.1:4000", "[2001:db8::1]:4000"},
		RTTs: []client.RTT{{Relay: relay, MS: 12.5}}, Relay: &relay, NAT: "symmetric"}
	if err := a.SendOffer(ctx, offer); err != nil {
		t.Fatal(err)
	}
	ev = nextEvent(t, bs, "offer")
	if ev.From != "alice" || *ev.FromDevice != aKey || ev.Kind != "offer" || ev.Session != "s1" || len(ev.Candidates) != 2 ||
		ev.RTTs[0].Relay != relay || ev.RTTs[0].MS != 12.5 || *ev.Relay != relay || ev.NAT != "symmetric" {
		t.Fatalf("offer event %s", ev.Raw)
	}
	// Answer back.
	if err := b.SendOffer(ctx, client.Offer{To: aKey, Kind: "answer", Session: "s1", Candidates: []string{"198.51.100.1:5000"}}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, as, "offer"); ev.Kind != "answer" || ev.From != "bob" {
		t.Fatalf("answer %s", ev.Raw)
	}
	err := a.SendOffer(ctx, client.Offer{To: bKey, Kind: "bogus", Session: "s"})
	wantStatus(t, err, 400, "invalid_request")
	err = a.SendOffer(ctx, client.Offer{To: bKey, Kind: "offer", Session: "s", Candidates: []string{"not an address"}})
	wantStatus(t, err, 400, "invalid_request")
	err = a.SendOffer(ctx, client.Offer{To: bKey, Kind: "offer", Session: "s", NAT: "cone-ish"})
	wantStatus(t, err, 400, "invalid_request")
	// Offline device.
	bs.Close()
	nextEvent(t, as, "presence")
	err = a.SendOffer(ctx, offer)
	wantStatus(t, err, 409, "peer_offline")
	// Paths for the dashboard.
	if err := a.ReportSession(ctx, bKey, "relayed"); err != nil {
		t.Fatal(err)
	}
	st, err := e.client().Status(ctx)
	if err != nil || st.Relayed != 1 || st.OffersPerMinute != 2 || st.OnlineDevices != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

func TestReconnectReplacesStream(t *testing.T) { testReconnectReplacesStream(t, newEnv) }

func testReconnectReplacesStream(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, _ := e.user("alice")
	b, _ := e.user("bob")
	befriend(t, a, b, "bob", "alice")
	as := events(t, a)
	s1 := events(t, b)
	nextEvent(t, as, "presence")
	s2 := events(t, b)
	if ev := nextEvent(t, s1, "closing"); ev.Reason != "connected again" {
		t.Fatalf("old stream: %+v", ev)
	}
	// The old stream's end must not announce bob offline: the next
	// presence alice sees is the new stream's "online".
	ev := nextEvent(t, as, "presence")
	if !ev.Online {
		t.Fatalf("presence after reconnect: %s", ev.Raw)
	}
	_ = s2
	st, _ := e.client().Status(t.Context())
	if st.OnlineDevices != 2 {
		t.Fatalf("online devices %d", st.OnlineDevices)
	}
}

func TestMailbox(t *testing.T) { testMailbox(t, newEnv) }

func testMailbox(t *testing.T, newEnv envMaker) {
	e := newEnv(t, func(c *directory.Config) { c.MailboxMaxBlob = 100; c.MailboxMaxCount = 3; c.MailboxMaxBytes = 200 })
	ctx := t.Context()
	a, aKey := e.user("alice")
	b, bKey := e.user("bob")
	befriend(t, a, b, "bob", "alice")
	id1, err := a.PutMail(ctx, bKey, []byte("sealed one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutMail(ctx, bKey, bytes.Repeat([]byte{1}, 100)); err != nil {
		t.Fatal(err)
	}
	_, err = a.PutMail(ctx, bKey, bytes.Repeat([]byte{1}, 101))
	wantStatus(t, err, 413, "too_large")
	_, err = a.PutMail(ctx, bKey, bytes.Repeat([]byte{1}, 100)) // 110 + 100 > 200
	wantStatus(t, err, 409, "mailbox_full")
	// Delivered on connect.
	bs := events(t, b)
	if ev := nextEvent(t, bs, "mailbox"); ev.Count != 2 {
		t.Fatalf("mailbox notice %s", ev.Raw)
	}
	// A new blob while online is announced too.
	if _, err := a.PutMail(ctx, bKey, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, bs, "mailbox"); ev.Count != 3 {
		t.Fatalf("mailbox notice %s", ev.Raw)
	}
	ms, err := b.Mail(ctx)
	if err != nil || len(ms) != 3 || ms[0].ID != id1 || string(ms[0].Blob) != "sealed one" || ms[0].From != "alice" || ms[0].FromDevice != aKey {
		t.Fatalf("mail %+v, %v", ms, err)
	}
	_, err = a.PutMail(ctx, bKey, []byte("y"))
	wantStatus(t, err, 409, "mailbox_full")
	n, err := b.AckMail(ctx, []int64{ms[0].ID, ms[1].ID})
	if err != nil || n != 2 {
		t.Fatalf("ack = %d, %v", n, err)
	}
	if ms, _ := b.Mail(ctx); len(ms) != 1 {
		t.Fatalf("after ack %d messages", len(ms))
	}
}

// echoSupernode answers dial-back probes on a loopback UDP socket, as a
// supernode's single socket will.
func echoSupernode(t *testing.T, echo bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if echo && n == directory.DialbackSize && strings.HasPrefix(string(buf[:n]), directory.DialbackMagic) {
				pc.WriteTo(buf[:n], from)
			}
		}
	})
	return pc.LocalAddr().String()
}

func TestSupernodesAndTickets(t *testing.T) { testSupernodesAndTickets(t, newEnv) }

func testSupernodesAndTickets(t *testing.T, newEnv envMaker) {
	e := newEnv(t, func(c *directory.Config) { c.DialbackTimeout = 600 * time.Millisecond })
	ctx := t.Context()
	a, aKey := e.user("alice")
	b, bKey := e.user("bob")
	befriend(t, a, b, "bob", "alice")
	sn, snKey := e.user("relay")

	_, err := sn.RegisterSupernode(ctx, echoSupernode(t, false), 0, 1<<20, 1<<30)
	wantStatus(t, err, 422, "dialback_failed")
	if sns, _ := a.Supernodes(ctx); len(sns) != 0 {
		t.Fatalf("unverified supernode listed: %+v", sns)
	}
	addr := echoSupernode(t, true)
	got, err := sn.RegisterSupernode(ctx, addr, 4443, 1<<20, 1<<30)
	if err != nil || got.Addr != addr || got.Key != snKey || got.TCPPort != 4443 {
		t.Fatalf("register = %+v, %v", got, err)
	}
	_, err = sn.RegisterSupernode(ctx, addr, 70000, 1<<20, 1<<30)
	wantStatus(t, err, 400, "invalid_request")
	if err := sn.ReportLoad(ctx, 40, 2); err != nil {
		t.Fatal(err)
	}
	sns, err := a.Supernodes(ctx)
	if err != nil || len(sns) != 1 || sns[0].Key != snKey || sns[0].Load != 40 || sns[0].Addr != addr || sns[0].TCPPort != 4443 {
		t.Fatalf("supernodes = %+v, %v", sns, err)
	}
	err = a.ReportLoad(ctx, 1, 1)
	wantStatus(t, err, 404, "not_supernode")

	tb, exp, raddr, err := a.Ticket(ctx, bKey, snKey)
	if err != nil || raddr != addr {
		t.Fatalf("ticket: %v", err)
	}
	pub, err := a.ServerKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := ticket.Verify(pub, tb, time.Now())
	if err != nil {
		t.Fatalf("ticket does not verify offline: %v", err)
	}
	if tk.A != aKey || tk.B != bKey || tk.Relay != snKey || tk.Budget != 1<<30 || tk.Rate != 1<<20 || !tk.ExpiresAt.Equal(exp) {
		t.Fatalf("ticket %+v", tk)
	}
	if d := tk.ExpiresAt.Sub(tk.IssuedAt); d != 10*time.Minute {
		t.Fatalf("ticket lifetime %v", d)
	}
	_, _, _, err = a.Ticket(ctx, bKey, newKey(t))
	wantStatus(t, err, 404, "not_supernode")

	// A relay offer with issue_ticket: the server signs the ticket, returns
	// it and passes the same ticket on with the offer.
	bs := events(t, b)
	tb, _, raddr, err = a.OfferRelay(ctx, client.Offer{To: bKey, Kind: "offer", Session: "r1", Relay: &snKey})
	if err != nil || raddr != addr {
		t.Fatalf("relay offer: %q, %v", raddr, err)
	}
	if tk, err := ticket.Verify(pub, tb, time.Now()); err != nil || tk.A != aKey || tk.B != bKey || tk.Relay != snKey {
		t.Fatalf("offer's ticket %+v, %v", tk, err)
	}
	ev := nextEvent(t, bs, "offer")
	if !bytes.Equal(ev.Ticket, tb) || ev.Relay == nil || *ev.Relay != snKey || ev.Session != "r1" {
		t.Fatalf("bob's offer event %+v: not the returned ticket", ev)
	}
	stranger := newKey(t)
	_, _, _, err = a.OfferRelay(ctx, client.Offer{To: bKey, Kind: "offer", Session: "r2", Relay: &stranger})
	wantStatus(t, err, 404, "not_supernode")
	_, _, _, err = a.OfferRelay(ctx, client.Offer{To: bKey, Kind: "answer", Session: "r3", Relay: &snKey})
	wantStatus(t, err, 400, "invalid_request")
	_, _, _, err = a.OfferRelay(ctx, client.Offer{To: bKey, Kind: "offer", Session: "r4"})
	wantStatus(t, err, 400, "invalid_request")

	// Public addresses only, by default.
	e2 := newEnv(t, func(c *directory.Config) { c.AllowPrivateSupernodes = false })
	c2, _ := e2.user("relay")
	for _, ad := range []string{"127.0.0.1:4000", "10.1.2.3:4000", "192.168.1.1:4000", "[fe80::1]:4000", "0.0.0.0:4000"} {
		_, err := c2.RegisterSupernode(ctx, ad, 0, 1, 1)
		wantStatus(t, err, 400, "invalid_request")
	}
	if err := sn.UnregisterSupernode(ctx); err != nil {
		t.Fatal(err)
	}
	if sns, _ := a.Supernodes(ctx); len(sns) != 0 {
		t.Fatalf("after unregister: %+v", sns)
	}
}

// TestCrossAccount: for every endpoint that touches another user's data,
// an account that is not a mutual contact can neither read nor change it.
func TestCrossAccount(t *testing.T) { testCrossAccount(t, newEnv) }

func testCrossAccount(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	ctx := t.Context()
	a, aKey := e.user("alice")
	b, bKey := e.user("bob")
	m, _ := e.user("mallory")
	befriend(t, a, b, "bob", "alice")
	if err := b.SetEndpoints(ctx, []string{"192.0.2.7:4000"}); err != nil {
		t.Fatal(err)
	}
	addr := echoSupernode(t, true)
	if _, err := b.RegisterSupernode(ctx, addr, 0, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	mailID, err := a.PutMail(ctx, bKey, []byte("for bob only"))
	if err != nil {
		t.Fatal(err)
	}
	bs := events(t, b)

	// Mallory has a pending request to bob: still not mutual.
	if _, err := m.RequestContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, bs, "contact_request")

	// Devices: own only; another's device cannot be revoked.
	devs, _ := m.Devices(ctx)
	if len(devs) != 1 || devs[0].Key == bKey {
		t.Fatalf("mallory's devices %+v", devs)
	}
	wantStatus(t, m.RevokeDevice(ctx, bKey), 404, "not_found")
	if devs, _ := b.Devices(ctx); len(devs) != 1 {
		t.Fatal("bob's device was revoked by mallory")
	}
	// Profile and contact lists: no devices, keys, endpoints or presence.
	u, err := m.LookupUser(ctx, "bob")
	if err != nil || u.Devices != nil || u.Online != nil {
		t.Fatalf("mallory sees %+v, %v", u, err)
	}
	cs, _, _, _ := m.Contacts(ctx, "")
	if len(cs) != 1 || cs[0].Devices != nil || cs[0].Online {
		t.Fatalf("mallory's contacts %+v", cs)
	}
	c, err := m.Contact(ctx, "bob")
	if err != nil || c.Devices != nil || c.Online {
		t.Fatalf("mallory's contact row %+v, %v", c, err)
	}
	_, err = m.Contact(ctx, "alice")
	wantStatus(t, err, 404, "not_found")
	resp, body := e.raw("GET", "/v1/users/bob", m.Token, "", nil)
	if resp.StatusCode != 200 || strings.Contains(body, bKey.String()) || strings.Contains(body, "192.0.2.7") {
		t.Fatalf("lookup leaks: %s", body)
	}
	for _, p := range []string{"/v1/contacts", "/v1/users?prefix=bob", "/v1/contacts/bob"} {
		_, body = e.raw("GET", p, m.Token, "", nil)
		if strings.Contains(body, bKey.String()) || strings.Contains(body, "192.0.2.7") {
			t.Fatalf("%s leaks bob's key or endpoint: %s", p, body)
		}
	}
	// Mallory cannot accept on bob's behalf, nor change alice and bob's
	// relationship.
	wantStatus(t, m.AcceptContact(ctx, "alice"), 404, "not_found")
	wantStatus(t, m.DeclineContact(ctx, "alice"), 404, "not_found")
	wantStatus(t, m.RemoveContact(ctx, "alice"), 404, "not_found")
	wantStatus(t, m.UnblockContact(ctx, "alice"), 404, "not_found")
	if c, _ := a.Contact(ctx, "bob"); c.State != "mutual" {
		t.Fatalf("alice-bob changed: %+v", c)
	}
	// Signalling: no offers, mailbox, tickets or session reports to bob.
	err = m.SendOffer(ctx, client.Offer{To: bKey, Kind: "offer", Session: "x"})
	wantStatus(t, err, 404, "not_found")
	_, err = m.PutMail(ctx, bKey, []byte("spam"))
	wantStatus(t, err, 404, "not_found")
	_, bRelay := bKey, bKey
	_, _, _, err = m.Ticket(ctx, bKey, bRelay)
	wantStatus(t, err, 404, "not_found")
	wantStatus(t, m.ReportSession(ctx, bKey, "direct"), 404, "not_found")
	// Mailbox: mallory's own is empty, and acking bob's IDs deletes nothing.
	if ms, _ := m.Mail(ctx); len(ms) != 0 {
		t.Fatalf("mallory reads %+v", ms)
	}
	if n, err := m.AckMail(ctx, []int64{mailID}); err != nil || n != 0 {
		t.Fatalf("mallory acked bob's mail: %d, %v", n, err)
	}
	if ms, _ := b.Mail(ctx); len(ms) != 1 {
		t.Fatal("bob's mail was deleted by mallory")
	}
	// Supernode: mallory cannot report load for or delist bob's.
	wantStatus(t, m.ReportLoad(ctx, 99, 0), 404, "not_supernode")
	wantStatus(t, m.UnregisterSupernode(ctx), 404, "not_supernode")
	if sns, _ := a.Supernodes(ctx); len(sns) != 1 || sns[0].Load != 0 {
		t.Fatalf("bob's supernode changed: %+v", sns)
	}
	// Account: mallory's password change or deletion touches only hers.
	if err := m.ChangePassword(ctx, password, "mallory's new password"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Account(ctx); err != nil {
		t.Fatalf("bob's token hit by mallory's password change: %v", err)
	}
	if err := m.DeleteAccount(ctx, "mallory's new password"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Account(ctx); err != nil {
		t.Fatalf("bob's account hit by mallory's deletion: %v", err)
	}
	// Presence: mallory never got bob's presence; alice did.
	as := events(t, a)
	b2, _ := e.login("bob")
	events(t, b2)
	if ev := nextEvent(t, as, "presence"); ev.Username != "bob" {
		t.Fatalf("%s", ev.Raw)
	}
	_ = aKey
}

// TestEventsMallory: a non-contact's stream never carries presence.
func TestEventsNonContactSeesNothing(t *testing.T) {
	e := newEnv(t)
	a, _ := e.user("alice")
	m, _ := e.user("mallory")
	b, _ := e.user("bob")
	befriend(t, a, b, "bob", "alice")
	ms := events(t, m)
	as := events(t, a)
	events(t, b)
	nextEvent(t, as, "presence")
	// Give mallory's stream the same chance: read until a deadline well
	// after alice's presence arrived; nothing may come.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	ev, err := ms.Next(ctx)
	if err == nil {
		t.Fatalf("mallory received %s", ev.Raw)
	}
	if !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		t.Fatalf("unexpected error %v", err)
	}
}

// TestDeadServerReaped: a server process that stops beating without closing
// (here a "ghost" that never existed but holds alice's device) has its
// devices marked offline by a live one, and their contacts are told.
func TestDeadServerReaped(t *testing.T) {
	e := newEnv(t, func(c *directory.Config) { c.HeartbeatInterval = 20 * time.Millisecond })
	ctx := t.Context()
	a, aKey := e.user("alice")
	b, _ := e.user("bob")
	befriend(t, a, b, "bob", "alice")
	bs := events(t, b)
	d, err := e.store.DeviceByKey(ctx, store.Key(aKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetDeviceOnline(ctx, d.ID, "ghost", true, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Heartbeat(ctx, "ghost", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, bs, "presence")
	if ev.Username != "alice" || ev.Online || *ev.Device != aKey {
		t.Fatalf("presence %s", ev.Raw)
	}
	if d, _ := e.store.DeviceByKey(ctx, store.Key(aKey)); d.Online {
		t.Fatal("alice's device still online")
	}
}
