package stun_test

import (
	"context"
	"net"
	"testing"
	"time"

	pion "github.com/pion/stun/v3"

	"github.com/parley-p2p/parley/stun"
)

// TestInteropPionClient: an independent STUN implementation (pion/stun)
// gets the right reflexive address from our server, and checks our
// FINGERPRINT.
func TestInteropPionClient(t *testing.T) {
	p, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	a, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer p.Close()
	defer a.Close()
	srv := &stun.Server{Primary: p, Alt: a, Software: "parley"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	conn, err := net.DialUDP("udp4", nil, p.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pion.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := pion.MustBuild(pion.TransactionID, pion.BindingRequest, pion.NewSoftware("pion"), pion.Fingerprint)
	var xor pion.XORMappedAddress
	var mapped pion.MappedAddress
	var other pion.OtherAddress
	var cbErr error
	if err := c.Do(req, func(ev pion.Event) {
		if ev.Error != nil {
			cbErr = ev.Error
			return
		}
		if err := pion.Fingerprint.Check(ev.Message); err != nil {
			cbErr = err
			return
		}
		if err := xor.GetFrom(ev.Message); err != nil {
			cbErr = err
			return
		}
		if err := mapped.GetFrom(ev.Message); err != nil {
			cbErr = err
			return
		}
		cbErr = other.GetFrom(ev.Message)
	}); err != nil {
		t.Fatal(err)
	}
	if cbErr != nil {
		t.Fatal(cbErr)
	}
	local := conn.LocalAddr().(*net.UDPAddr)
	if !xor.IP.Equal(local.IP) || xor.Port != local.Port {
		t.Fatalf("pion read XOR-MAPPED-ADDRESS %v, want %v", xor, local)
	}
	if !mapped.IP.Equal(local.IP) || mapped.Port != local.Port {
		t.Fatalf("pion read MAPPED-ADDRESS %v, want %v", mapped, local)
	}
	if other.Port != a.LocalAddr().(*net.UDPAddr).Port {
		t.Fatalf("OTHER-ADDRESS %v, want port %d", other, a.LocalAddr().(*net.UDPAddr).Port)
	}
}

// TestInteropPionResponse: our client parses a response encoded by pion.
func TestInteropPionResponse(t *testing.T) {
	id := stun.NewTxID()
	m := pion.MustBuild(pion.NewTransactionIDSetter(id), pion.BindingSuccess,
		&pion.XORMappedAddress{IP: net.ParseIP("203.0.113.9"), Port: 40000}, pion.NewSoftware("pion"), pion.Fingerprint)
	if !stun.IsMessage(m.Raw) {
		t.Fatal("IsMessage false for pion's message")
	}
	got, err := stun.ParseResponse(m.Raw, id)
	if err != nil || got.String() != "203.0.113.9:40000" {
		t.Fatalf("parsed %v, %v", got, err)
	}
	m6 := pion.MustBuild(pion.NewTransactionIDSetter(id), pion.BindingSuccess,
		&pion.XORMappedAddress{IP: net.ParseIP("2001:db8::42"), Port: 5}, pion.Fingerprint)
	got, err = stun.ParseResponse(m6.Raw, id)
	if err != nil || got.String() != "[2001:db8::42]:5" {
		t.Fatalf("parsed %v, %v", got, err)
	}
	// And pion parses our request.
	req := stun.AppendBindingRequest(nil, id)
	var pm pion.Message
	pm.Raw = req
	if err := pm.Decode(); err != nil || pm.Type != pion.BindingRequest || pm.TransactionID != id {
		t.Fatalf("pion decoding our request: %v %v", err, pm)
	}
	if err := pion.Fingerprint.Check(&pm); err != nil {
		t.Fatalf("pion rejects our FINGERPRINT: %v", err)
	}
	_ = time.Second
}
