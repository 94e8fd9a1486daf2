// Package storetest is the behaviour every store.Store must have, written
// once and run against each implementation (SQLite and a real PostgreSQL)
// with a constructor, so the back ends cannot drift apart.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory/store"
)

// Run runs the suite. open returns a fresh, empty store, closed by t's
// cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"Users", testUsers},
		{"Search", testSearch},
		{"Devices", testDevices},
		{"Online", testOnline},
		{"Tokens", testTokens},
		{"Contacts", testContacts},
		{"Block", testBlock},
		{"Mail", testMail},
		{"MailConcurrentQuota", testMailConcurrentQuota},
		{"Supernodes", testSupernodes},
		{"DeleteUserCascades", testDeleteUserCascades},
		{"Broadcast", testBroadcast},
		{"Servers", testServers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

var t0 = time.UnixMilli(1_800_000_000_000)

func ctx(t *testing.T) context.Context { return t.Context() }

func mustUser(t *testing.T, s store.Store, name string) store.User {
	t.Helper()
	u, err := s.CreateUser(ctx(t), name, "hash-"+name, t0)
	if err != nil {
		t.Fatalf("CreateUser(%q): %v", name, err)
	}
	return u
}

func key(b byte) store.Key {
	var k store.Key
	for i := range k {
		k[i] = b
	}
	return k
}

func mustDevice(t *testing.T, s store.Store, u store.User, k byte) store.Device {
	t.Helper()
	d, err := s.UpsertDevice(ctx(t), u.ID, key(k), fmt.Sprintf("dev-%d", k), t0)
	if err != nil {
		t.Fatalf("UpsertDevice: %v", err)
	}
	return d
}

func testUsers(t *testing.T, s store.Store) {
	a := mustUser(t, s, "alice")
	if a.ID == 0 || a.Username != "alice" || a.PasswordHash != "hash-alice" || !a.CreatedAt.Equal(t0) {
		t.Fatalf("created %+v", a)
	}
	if _, err := s.CreateUser(ctx(t), "alice", "x", t0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate username: err = %v, want ErrConflict", err)
	}
	b := mustUser(t, s, "bob")
	if b.ID == a.ID {
		t.Fatal("same ID for two users")
	}
	got, err := s.UserByName(ctx(t), "alice")
	if err != nil || got != a {
		t.Fatalf("UserByName = %+v, %v; want %+v", got, err, a)
	}
	got, err = s.UserByID(ctx(t), b.ID)
	if err != nil || got.Username != "bob" {
		t.Fatalf("UserByID = %+v, %v", got, err)
	}
	if _, err := s.UserByName(ctx(t), "carol"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing user: err = %v", err)
	}
	if _, err := s.UserByName(ctx(t), "ALICE"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("lookup is exact, got err = %v", err)
	}
	t1 := t0.Add(time.Hour)
	if err := s.SetPasswordHash(ctx(t), a.ID, "new", t1); err != nil {
		t.Fatal(err)
	}
	got, _ = s.UserByID(ctx(t), a.ID)
	if got.PasswordHash != "new" || !got.UpdatedAt.Equal(t1) {
		t.Fatalf("after SetPasswordHash: %+v", got)
	}
	if err := s.SetPasswordHash(ctx(t), 999999, "x", t1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetPasswordHash(missing) = %v", err)
	}
	if err := s.DeleteUser(ctx(t), a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserByID(ctx(t), a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted user still there: %v", err)
	}
	if err := s.DeleteUser(ctx(t), a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func testSearch(t *testing.T, s store.Store) {
	for _, n := range []string{"ann", "anna", "annabel", "anne", "bob", "an"} {
		mustUser(t, s, n)
	}
	got, err := s.SearchUsers(ctx(t), "ann", 3)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range got {
		names = append(names, u.Username)
	}
	if want := []string{"ann", "anna", "annabel"}; !slices.Equal(names, want) {
		t.Fatalf("SearchUsers(ann, 3) = %v, want %v", names, want)
	}
	got, _ = s.SearchUsers(ctx(t), "zz", 10)
	if len(got) != 0 {
		t.Fatalf("SearchUsers(zz) = %v", got)
	}
}

func testDevices(t *testing.T, s store.Store) {
	a, b := mustUser(t, s, "alice"), mustUser(t, s, "bob")
	d1 := mustDevice(t, s, a, 1)
	if d1.UserID != a.ID || d1.PublicKey != key(1) || d1.Name != "dev-1" || d1.Online {
		t.Fatalf("device %+v", d1)
	}
	// Same key, same user: rename, same ID.
	d1b, err := s.UpsertDevice(ctx(t), a.ID, key(1), "laptop", t0.Add(time.Second))
	if err != nil || d1b.ID != d1.ID || d1b.Name != "laptop" {
		t.Fatalf("re-upsert = %+v, %v", d1b, err)
	}
	// Same key, other user: conflict.
	if _, err := s.UpsertDevice(ctx(t), b.ID, key(1), "stolen", t0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("key of another user: err = %v", err)
	}
	d2 := mustDevice(t, s, a, 2)
	db := mustDevice(t, s, b, 3)
	ds, err := s.Devices(ctx(t), a.ID)
	if err != nil || len(ds) != 2 || ds[0].ID != d1.ID || ds[1].ID != d2.ID || ds[0].Name != "laptop" {
		t.Fatalf("Devices(alice) = %+v, %v", ds, err)
	}
	all, err := s.DevicesOfUsers(ctx(t), []int64{a.ID, b.ID})
	if err != nil || len(all) != 3 {
		t.Fatalf("DevicesOfUsers = %d devices, %v", len(all), err)
	}
	got, err := s.DeviceByKey(ctx(t), key(3))
	if err != nil || got.ID != db.ID || got.UserID != b.ID {
		t.Fatalf("DeviceByKey = %+v, %v", got, err)
	}
	if _, err := s.DeviceByKey(ctx(t), key(9)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeviceByKey(missing) = %v", err)
	}
	if err := s.SetDeviceEndpoints(ctx(t), d2.ID, []string{"192.0.2.1:4000", "[2001:db8::1]:4000"}, t0); err != nil {
		t.Fatal(err)
	}
	got, _ = s.DeviceByID(ctx(t), d2.ID)
	if !slices.Equal(got.Endpoints, []string{"192.0.2.1:4000", "[2001:db8::1]:4000"}) {
		t.Fatalf("endpoints = %v", got.Endpoints)
	}
	// Bob cannot delete Alice's device.
	if err := s.DeleteDevice(ctx(t), b.ID, d1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteDevice(other user's) = %v", err)
	}
	tok := store.Token{Hash: [32]byte{1}, UserID: a.ID, DeviceID: d1.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if err := s.CreateToken(ctx(t), tok); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDevice(ctx(t), a.ID, d1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenByHash(ctx(t), tok.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked device's token survives: %v", err)
	}
	// The key is free again.
	if _, err := s.UpsertDevice(ctx(t), b.ID, key(1), "reused", t0); err != nil {
		t.Fatalf("reuse revoked key: %v", err)
	}
}

func testOnline(t *testing.T, s store.Store) {
	a := mustUser(t, s, "alice")
	d1, d2 := mustDevice(t, s, a, 1), mustDevice(t, s, a, 2)
	if err := s.SetDeviceOnline(ctx(t), d1.ID, "srv1", true, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDeviceOnline(ctx(t), d2.ID, "srv2", true, t0); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountOnline(ctx(t)); n != 2 {
		t.Fatalf("CountOnline = %d, want 2", n)
	}
	// d1 reconnects to srv2; a late close from srv1 must not undo it.
	if err := s.SetDeviceOnline(ctx(t), d1.ID, "srv2", true, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDeviceOnline(ctx(t), d1.ID, "srv1", false, t0); err != nil {
		t.Fatal(err)
	}
	got, _ := s.DeviceByID(ctx(t), d1.ID)
	if !got.Online || got.OnlineServer != "srv2" {
		t.Fatalf("late offline from old server applied: %+v", got)
	}
	if err := s.ClearOnline(ctx(t), "srv1", t0); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountOnline(ctx(t)); n != 2 {
		t.Fatalf("ClearOnline(srv1) cleared others: CountOnline = %d", n)
	}
	if err := s.SetDeviceOnline(ctx(t), d2.ID, "srv2", false, t0); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountOnline(ctx(t)); n != 1 {
		t.Fatalf("CountOnline = %d, want 1", n)
	}
	if err := s.ClearOnline(ctx(t), "", t0); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountOnline(ctx(t)); n != 0 {
		t.Fatalf("after ClearOnline(all) CountOnline = %d", n)
	}
}

func testTokens(t *testing.T, s store.Store) {
	a := mustUser(t, s, "alice")
	d := mustDevice(t, s, a, 1)
	mk := func(b byte, exp time.Time) store.Token {
		tok := store.Token{Hash: [32]byte{b}, UserID: a.ID, DeviceID: d.ID, CreatedAt: t0, ExpiresAt: exp}
		if err := s.CreateToken(ctx(t), tok); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	t1 := mk(1, t0.Add(time.Hour))
	mk(2, t0.Add(time.Minute))
	mk(3, t0.Add(time.Hour))
	if err := s.CreateToken(ctx(t), t1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate token: %v", err)
	}
	got, err := s.TokenByHash(ctx(t), t1.Hash)
	if err != nil || got != t1 {
		t.Fatalf("TokenByHash = %+v, %v; want %+v", got, err, t1)
	}
	n, err := s.DeleteExpiredTokens(ctx(t), t0.Add(2*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("DeleteExpiredTokens = %d, %v", n, err)
	}
	deleted, err := s.DeleteUserTokens(ctx(t), a.ID, t1.Hash)
	if err != nil || len(deleted) != 1 || deleted[0] != [32]byte{3} {
		t.Fatalf("DeleteUserTokens = %v, %v", deleted, err)
	}
	if _, err := s.TokenByHash(ctx(t), t1.Hash); err != nil {
		t.Fatalf("kept token gone: %v", err)
	}
	if err := s.DeleteToken(ctx(t), t1.Hash); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteToken(ctx(t), t1.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func wantState(t *testing.T, s store.Store, u, o store.User, want store.ContactState) {
	t.Helper()
	got, err := s.ContactState(ctx(t), u.ID, o.ID)
	if want == 0 {
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s about %s: state %v, err %v; want no row", u.Username, o.Username, got, err)
		}
		return
	}
	if err != nil || got != want {
		t.Fatalf("%s about %s: state %v, err %v; want %v", u.Username, o.Username, got, err, want)
	}
}

func testContacts(t *testing.T, s store.Store) {
	a, b, c := mustUser(t, s, "alice"), mustUser(t, s, "bob"), mustUser(t, s, "carol")
	st, err := s.RequestContact(ctx(t), a.ID, b.ID, t0)
	if err != nil || st != store.Outgoing {
		t.Fatalf("request = %v, %v", st, err)
	}
	wantState(t, s, a, b, store.Outgoing)
	wantState(t, s, b, a, store.Incoming)
	// Asking again is harmless.
	if st, err := s.RequestContact(ctx(t), a.ID, b.ID, t0); err != nil || st != store.Outgoing {
		t.Fatalf("request again = %v, %v", st, err)
	}
	// Only the recipient can accept.
	if err := s.AcceptContact(ctx(t), a.ID, b.ID, t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("requester accepts own request: %v", err)
	}
	if err := s.AcceptContact(ctx(t), b.ID, a.ID, t0); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, a, b, store.Mutual)
	wantState(t, s, b, a, store.Mutual)
	if _, err := s.RequestContact(ctx(t), b.ID, a.ID, t0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("request when mutual: %v", err)
	}
	// Crossing requests become mutual.
	s.RequestContact(ctx(t), a.ID, c.ID, t0)
	if st, err := s.RequestContact(ctx(t), c.ID, a.ID, t0); err != nil || st != store.Mutual {
		t.Fatalf("crossing request = %v, %v", st, err)
	}
	ids, err := s.MutualContacts(ctx(t), a.ID)
	if err != nil || !slices.Equal(ids, []int64{b.ID, c.ID}) {
		t.Fatalf("MutualContacts = %v, %v", ids, err)
	}
	cs, err := s.Contacts(ctx(t), a.ID)
	if err != nil || len(cs) != 2 || cs[0].Username != "bob" || cs[1].Username != "carol" || cs[0].State != store.Mutual {
		t.Fatalf("Contacts = %+v, %v", cs, err)
	}
	// Remove from either side removes both rows.
	if err := s.RemoveContact(ctx(t), c.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, a, c, 0)
	wantState(t, s, c, a, 0)
	if err := s.RemoveContact(ctx(t), c.ID, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	// Decline.
	s.RequestContact(ctx(t), c.ID, b.ID, t0)
	if err := s.DeclineContact(ctx(t), c.ID, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("requester declines: %v", err)
	}
	if err := s.DeclineContact(ctx(t), b.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, b, c, 0)
	wantState(t, s, c, b, 0)
	// Cancel an outgoing request.
	s.RequestContact(ctx(t), c.ID, b.ID, t0)
	if err := s.RemoveContact(ctx(t), c.ID, b.ID); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, b, c, 0)
	if _, err := s.RequestContact(ctx(t), a.ID, a.ID, t0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("self request: %v", err)
	}
}

func testBlock(t *testing.T, s store.Store) {
	a, b := mustUser(t, s, "alice"), mustUser(t, s, "bob")
	s.RequestContact(ctx(t), a.ID, b.ID, t0)
	s.AcceptContact(ctx(t), b.ID, a.ID, t0)
	if err := s.Block(ctx(t), a.ID, b.ID, t0); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, a, b, store.Blocked)
	wantState(t, s, b, a, 0)
	if ids, _ := s.MutualContacts(ctx(t), b.ID); len(ids) != 0 {
		t.Fatalf("blocked pair still mutual: %v", ids)
	}
	// Bob asks again: he sees an outgoing request, Alice sees nothing new.
	st, err := s.RequestContact(ctx(t), b.ID, a.ID, t0)
	if err != nil || st != store.Outgoing {
		t.Fatalf("blocked user's request = %v, %v", st, err)
	}
	wantState(t, s, a, b, store.Blocked)
	// Alice cannot ask while blocking.
	if _, err := s.RequestContact(ctx(t), a.ID, b.ID, t0); !errors.Is(err, store.ErrBlocked) {
		t.Fatalf("blocker requests: %v", err)
	}
	// Bob cancelling must not lift the block.
	if err := s.RemoveContact(ctx(t), b.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, a, b, store.Blocked)
	if err := s.Unblock(ctx(t), a.ID, b.ID); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, a, b, 0)
	// Bob's request made during the block stands: Alice asking now makes
	// them mutual.
	s.RequestContact(ctx(t), b.ID, a.ID, t0)
	if st, err := s.RequestContact(ctx(t), a.ID, b.ID, t0); err != nil || st != store.Mutual {
		t.Fatalf("request after unblock = %v, %v; want mutual", st, err)
	}
	wantState(t, s, b, a, store.Mutual)
	if err := s.Unblock(ctx(t), a.ID, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unblock twice: %v", err)
	}
	if err := s.Block(ctx(t), a.ID, a.ID, t0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("self block: %v", err)
	}
}

func testMail(t *testing.T, s store.Store) {
	a, b := mustUser(t, s, "alice"), mustUser(t, s, "bob")
	da, db := mustDevice(t, s, a, 1), mustDevice(t, s, b, 2)
	put := func(blob string) (store.Mail, error) {
		return s.PutMail(ctx(t), store.Mail{RecipientDevice: db.ID, SenderUser: a.ID, SenderKey: da.PublicKey, Blob: []byte(blob), CreatedAt: t0}, 3, 10)
	}
	m1, err := put("aaaa")
	if err != nil || m1.ID == 0 {
		t.Fatalf("PutMail = %+v, %v", m1, err)
	}
	if _, err := put("bbbbbbb"); !errors.Is(err, store.ErrLimit) {
		t.Fatalf("over byte quota: %v", err)
	}
	m2, _ := put("bb")
	put("cc")
	if _, err := put("d"); !errors.Is(err, store.ErrLimit) {
		t.Fatalf("over count quota: %v", err)
	}
	ms, err := s.Mail(ctx(t), db.ID)
	if err != nil || len(ms) != 3 || string(ms[0].Blob) != "aaaa" || ms[0].SenderUsername != "alice" || ms[0].SenderKey != da.PublicKey {
		t.Fatalf("Mail = %+v, %v", ms, err)
	}
	if ms, _ := s.Mail(ctx(t), da.ID); len(ms) != 0 {
		t.Fatalf("alice's device sees bob's mail: %+v", ms)
	}
	// Alice's device cannot delete Bob's mail.
	if n, err := s.DeleteMail(ctx(t), da.ID, []int64{m1.ID}); err != nil || n != 0 {
		t.Fatalf("DeleteMail(other device) = %d, %v", n, err)
	}
	if n, err := s.DeleteMail(ctx(t), db.ID, []int64{m1.ID, m2.ID, 424242}); err != nil || n != 2 {
		t.Fatalf("DeleteMail = %d, %v", n, err)
	}
	if n, _ := s.CountMail(ctx(t), db.ID); n != 1 {
		t.Fatalf("CountMail = %d", n)
	}
}

func testMailConcurrentQuota(t *testing.T, s store.Store) {
	a, b := mustUser(t, s, "alice"), mustUser(t, s, "bob")
	da, db := mustDevice(t, s, a, 1), mustDevice(t, s, b, 2)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := s.PutMail(context.Background(), store.Mail{RecipientDevice: db.ID, SenderUser: a.ID, SenderKey: da.PublicKey, Blob: []byte("x"), CreatedAt: t0}, 5, 1000)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrLimit):
			t.Errorf("PutMail: %v", err)
		}
	}
	if n, _ := s.CountMail(ctx(t), db.ID); ok != 5 || n != 5 {
		t.Fatalf("%d puts succeeded, %d stored; want 5 under a quota of 5", ok, n)
	}
}

func testSupernodes(t *testing.T, s store.Store) {
	a := mustUser(t, s, "alice")
	d1, d2 := mustDevice(t, s, a, 1), mustDevice(t, s, a, 2)
	for i, d := range []store.Device{d1, d2} {
		err := s.PutSupernode(ctx(t), store.Supernode{DeviceID: d.ID, Addr: fmt.Sprintf("192.0.2.%d:3000", i+1), TCPPort: 443 * i, VerifiedAt: t0, ReportedAt: t0, Load: 50 - i*10, BudgetRate: 1e6, BudgetBytes: 1e9})
		if err != nil {
			t.Fatal(err)
		}
	}
	sns, err := s.Supernodes(ctx(t), t0)
	if err != nil || len(sns) != 2 || sns[0].DeviceID != d2.ID || sns[0].PublicKey != d2.PublicKey || sns[0].Addr != "192.0.2.2:3000" || sns[0].TCPPort != 443 || sns[1].TCPPort != 0 || sns[0].BudgetRate != 1e6 {
		t.Fatalf("Supernodes = %+v, %v", sns, err)
	}
	if err := s.ReportLoad(ctx(t), d1.ID, 5, 3, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	sns, _ = s.Supernodes(ctx(t), t0.Add(time.Second))
	if len(sns) != 1 || sns[0].DeviceID != d1.ID || sns[0].Load != 5 || sns[0].Sessions != 3 {
		t.Fatalf("fresh supernodes = %+v", sns)
	}
	if err := s.ReportLoad(ctx(t), 999999, 1, 1, t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ReportLoad(unlisted) = %v", err)
	}
	s.DeleteDevice(ctx(t), a.ID, d1.ID)
	if sns, _ := s.Supernodes(ctx(t), t0); len(sns) != 1 {
		t.Fatalf("revoked device still a supernode: %+v", sns)
	}
	if err := s.DeleteSupernode(ctx(t), d2.ID); err != nil {
		t.Fatal(err)
	}
}

func testDeleteUserCascades(t *testing.T, s store.Store) {
	a, b := mustUser(t, s, "alice"), mustUser(t, s, "bob")
	da, db := mustDevice(t, s, a, 1), mustDevice(t, s, b, 2)
	s.RequestContact(ctx(t), a.ID, b.ID, t0)
	s.AcceptContact(ctx(t), b.ID, a.ID, t0)
	s.CreateToken(ctx(t), store.Token{Hash: [32]byte{7}, UserID: a.ID, DeviceID: da.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	if _, err := s.PutMail(ctx(t), store.Mail{RecipientDevice: db.ID, SenderUser: a.ID, SenderKey: da.PublicKey, Blob: []byte("hi"), CreatedAt: t0}, 10, 100); err != nil {
		t.Fatal(err)
	}
	s.PutSupernode(ctx(t), store.Supernode{DeviceID: da.ID, Addr: "192.0.2.1:1", VerifiedAt: t0, ReportedAt: t0})
	if err := s.DeleteUser(ctx(t), a.ID); err != nil {
		t.Fatal(err)
	}
	if cs, _ := s.Contacts(ctx(t), b.ID); len(cs) != 0 {
		t.Fatalf("bob still has contacts: %+v", cs)
	}
	if n, _ := s.CountMail(ctx(t), db.ID); n != 0 {
		t.Fatalf("mail from deleted user survives: %d", n)
	}
	if _, err := s.DeviceByKey(ctx(t), da.PublicKey); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("device survives: %v", err)
	}
	if _, err := s.TokenByHash(ctx(t), [32]byte{7}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token survives: %v", err)
	}
	if sns, _ := s.Supernodes(ctx(t), time.Time{}); len(sns) != 0 {
		t.Fatalf("supernode survives: %+v", sns)
	}
}

func testBroadcast(t *testing.T, s store.Store) {
	got := make(chan string, 10)
	cancel := s.Subscribe(func(p []byte) { got <- string(p) }, nil)
	if err := s.Publish(ctx(t), []byte(`{"hello":1}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != `{"hello":1}` {
			t.Fatalf("received %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("broadcast not received")
	}
	cancel()
	if err := s.Publish(ctx(t), make([]byte, store.MaxBroadcast+1)); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("oversized publish: %v", err)
	}
}

func testServers(t *testing.T, s store.Store) {
	a := mustUser(t, s, "alice")
	d1, d2 := mustDevice(t, s, a, 1), mustDevice(t, s, a, 2)
	s.SetDeviceOnline(ctx(t), d1.ID, "dead", true, t0)
	s.SetDeviceOnline(ctx(t), d2.ID, "alive", true, t0)
	if err := s.Heartbeat(ctx(t), "dead", t0); err != nil {
		t.Fatal(err)
	}
	s.Heartbeat(ctx(t), "alive", t0)
	s.Heartbeat(ctx(t), "alive", t0.Add(time.Minute)) // upsert
	stale, err := s.StaleServers(ctx(t), t0.Add(30*time.Second))
	if err != nil || !slices.Equal(stale, []string{"dead"}) {
		t.Fatalf("StaleServers = %v, %v", stale, err)
	}
	held, err := s.DevicesHeldBy(ctx(t), "dead")
	if err != nil || len(held) != 1 || held[0].ID != d1.ID {
		t.Fatalf("DevicesHeldBy = %+v, %v", held, err)
	}
	if ok, err := s.DeleteServer(ctx(t), "dead"); !ok || err != nil {
		t.Fatalf("DeleteServer = %v, %v", ok, err)
	}
	if ok, _ := s.DeleteServer(ctx(t), "dead"); ok {
		t.Fatal("DeleteServer twice reported true")
	}
}
