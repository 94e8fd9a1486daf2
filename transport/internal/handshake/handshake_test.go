package handshake

import (
	"bytes"
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/parley-p2p/parley/transport/internal/wire"
)

func mustKey(t testing.TB) KeyPair {
	k, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func cid(b byte) wire.ConnID { return wire.ConnID{b, b, b, b, b, b, b, b} }

var src = netip.MustParseAddrPort("192.0.2.1:4000")

func TestHandshakeDerivesMatchingKeys(t *testing.T) {
	alice, bob := mustKey(t), mustKey(t)
	now := time.Unix(1700000000, 0)
	ini, pkt, err := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(1), InitialMaxData: 1 << 20}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkt) != wire.InitiationLen {
		t.Fatalf("initiation is %d bytes", len(pkt))
	}
	r := NewResponder(bob)
	if v := r.Screen(pkt, src, now); v != Process {
		t.Fatalf("screen: %v", v)
	}
	p, err := r.Consume(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if p.RemoteStatic != alice.Public || p.Params.SenderCID != cid(1) || p.Params.InitialMaxData != 1<<20 {
		t.Fatalf("pending: %+v", p)
	}
	resp, bobKeys, err := p.Respond(nil, wire.HandshakeParams{SenderCID: cid(2), MaxStreams: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp) >= len(pkt) {
		t.Fatalf("response (%d bytes) not smaller than initiation (%d)", len(resp), len(pkt))
	}
	params, aliceKeys, err := ini.ConsumeResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if params.SenderCID != cid(2) || params.MaxStreams != 7 {
		t.Fatalf("params: %+v", params)
	}
	if aliceKeys.Send != bobKeys.Recv || aliceKeys.Recv != bobKeys.Send || aliceKeys.Send == aliceKeys.Recv {
		t.Fatal("keys do not pair up")
	}
}

func TestScreenDropsBadMAC1(t *testing.T) {
	alice, bob, eve := mustKey(t), mustKey(t), mustKey(t)
	now := time.Now()
	// An initiation for eve's key, sent to bob: mac1 is wrong for bob.
	_, pkt, _ := Initiate(nil, alice, eve.Public, wire.HandshakeParams{SenderCID: cid(1)}, nil, now)
	if v := NewResponder(bob).Screen(pkt, src, now); v != Drop {
		t.Fatalf("screen: %v", v)
	}
	junk := make([]byte, wire.InitiationLen)
	rand.Read(junk)
	if v := NewResponder(bob).Screen(junk, src, now); v != Drop {
		t.Fatalf("junk: %v", v)
	}
	if v := NewResponder(bob).Screen(junk[:10], src, now); v != Drop {
		t.Fatalf("short: %v", v)
	}
}

func TestReplayedInitiationRejected(t *testing.T) {
	alice, bob := mustKey(t), mustKey(t)
	now := time.Now()
	_, pkt, _ := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(1)}, nil, now)
	r := NewResponder(bob)
	if _, err := r.Consume(pkt); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Consume(pkt); err != ErrReplay {
		t.Fatalf("replay: %v", err)
	}
	// A newer initiation from the same key is fine.
	_, pkt2, _ := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(3)}, nil, now)
	if _, err := r.Consume(pkt2); err != nil {
		t.Fatalf("fresh initiation: %v", err)
	}
}

func TestTamperedInitiationFails(t *testing.T) {
	alice, bob := mustKey(t), mustKey(t)
	now := time.Now()
	_, pkt, _ := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(1)}, nil, now)
	// Changing the clear-text CID breaks the binding to the authenticated one.
	bad := bytes.Clone(pkt)
	bad[5] ^= 0xff
	if _, err := NewResponder(bob).Consume(bad); err == nil {
		t.Fatal("tampered CID accepted")
	}
	bad = bytes.Clone(pkt)
	bad[60] ^= 1
	if _, err := NewResponder(bob).Consume(bad); err != ErrDecrypt {
		t.Fatalf("tampered noise message: %v", err)
	}
}

func TestCookieUnderLoad(t *testing.T) {
	alice, bob := mustKey(t), mustKey(t)
	now := time.Now()
	r := NewResponder(bob)
	r.ForceLoad(true)
	ini, pkt, _ := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(1)}, nil, now)
	if v := r.Screen(pkt, src, now); v != SendCookie {
		t.Fatalf("under load without mac2: %v", v)
	}
	reply, err := r.CookieReply(nil, pkt, src, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply) >= len(pkt) {
		t.Fatal("cookie reply larger than the initiation")
	}
	cookie, err := ini.ConsumeCookieReply(reply)
	if err != nil {
		t.Fatal(err)
	}
	_, pkt2, _ := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(1)}, &cookie, now)
	if v := r.Screen(pkt2, src, now); v != Process {
		t.Fatalf("with cookie: %v", v)
	}
	// The cookie is bound to the source address: from elsewhere it is useless.
	other := netip.MustParseAddrPort("192.0.2.99:4000")
	if v := r.Screen(pkt2, other, now); v != SendCookie {
		t.Fatalf("cookie from another address: %v", v)
	}
	// Rate limit: a burst from one source beyond the bucket is dropped.
	drops := 0
	for i := 0; i < 50; i++ {
		_, p, _ := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(1)}, &cookie, now)
		if r.Screen(p, src, now) == Drop {
			drops++
		}
	}
	if drops < 40 {
		t.Fatalf("only %d of 50 burst initiations rate-limited", drops)
	}
	// After cookieSecretLifetime*2 the old cookie no longer works.
	later := now.Add(5 * time.Minute)
	if v := r.Screen(pkt2, src, later); v != SendCookie {
		t.Fatalf("stale cookie: %v", v)
	}
}

func TestLoadMeterTrips(t *testing.T) {
	var m loadMeter
	now := time.Now()
	loaded := false
	for i := 0; i < loadThreshold+1; i++ {
		loaded = m.observe(now)
	}
	if !loaded {
		t.Fatal("not under load after threshold")
	}
	if m.observe(now.Add(3 * time.Second)) {
		t.Fatal("still under load after the hold time")
	}
}

func TestPublicKeyMatchesGenerated(t *testing.T) {
	k := mustKey(t)
	if PublicKey(k.Private) != k.Public {
		t.Fatal("PublicKey disagrees with GenerateKeyPair")
	}
}

func BenchmarkHandshake(b *testing.B) {
	alice, bob := mustKey(b), mustKey(b)
	r := NewResponder(bob)
	now := time.Now()
	for i := 0; i < b.N; i++ {
		ini, pkt, _ := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(1)}, nil, now)
		p, err := r.Consume(pkt)
		if err != nil {
			b.Fatal(err)
		}
		resp, _, _ := p.Respond(nil, wire.HandshakeParams{SenderCID: cid(2)})
		if _, _, err := ini.ConsumeResponse(resp); err != nil {
			b.Fatal(err)
		}
	}
}

func TestEarlyKeyMatchesAndIsBound(t *testing.T) {
	alice, bob, mallory := mustKey(t), mustKey(t), mustKey(t)
	now := time.Unix(1700000000, 0)
	ini, pkt, err := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(1)}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	eph := ini.Ephemeral()
	if !bytes.Equal(eph[:], pkt[wire.InitiationNoiseOffset:wire.InitiationNoiseOffset+32]) {
		t.Fatal("Ephemeral is not the initiation's e")
	}
	k, err := ini.EarlyKey()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ResponderEarlyKey(bob, alice.Public, eph)
	if err != nil || got != k {
		t.Fatalf("responder's early key %x, %v; initiator's %x", got, err, k)
	}
	// Another responder, another claimed initiator or another initiation
	// each give another key.
	if other, _ := ResponderEarlyKey(mallory, alice.Public, eph); other == k {
		t.Error("a third party's static key derives the early key")
	}
	if other, _ := ResponderEarlyKey(bob, mallory.Public, eph); other == k {
		t.Error("the key does not depend on the initiator's static key")
	}
	ini2, _, err := Initiate(nil, alice, bob.Public, wire.HandshakeParams{SenderCID: cid(1)}, nil, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if k2, _ := ini2.EarlyKey(); k2 == k {
		t.Error("two initiations share an early key")
	}
}
