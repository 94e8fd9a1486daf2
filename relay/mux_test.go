package relay

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
)

func TestMuxDemultiplexes(t *testing.T) {
	checkNoLeaks(t)
	pc, other := loopUDP(t), loopUDP(t)
	c := NewClient(pc, nil)
	m := NewMux(pc, c)
	defer m.Close()
	stun := make(chan []byte, 1)
	m.HandleOther(func(b []byte, from netip.AddrPort) {
		if from == other.LocalAddr().(*net.UDPAddr).AddrPort() {
			stun <- append([]byte(nil), b...)
		}
	})
	to := pc.LocalAddr()
	other.WriteTo([]byte{0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42}, to) // a STUN request's start
	other.WriteTo([]byte{0xD1, byte(TypeDeliver), 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0xC1}, to)
	other.WriteTo([]byte{0xC1, 4, 'p', 'a', 'r', 'l', 'e', 'y'}, to)
	select {
	case b := <-stun:
		if b[0] != 0 || len(b) != 8 {
			t.Errorf("HandleOther got %x", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("STUN packet did not reach HandleOther")
	}
	m.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := m.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "\xc1\x04parley" || from != other.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("ReadFrom = %q from %v, %v", buf[:n], from, err)
	}
	// The DELIVER for a channel the client does not hold was dropped, not
	// passed up.
	if c.Dropped() != 1 {
		t.Errorf("client dropped %d, want 1", c.Dropped())
	}
}

func TestMuxDeadlinesAndClose(t *testing.T) {
	checkNoLeaks(t)
	pc := loopUDP(t)
	m := NewMux(pc, nil)
	m.SetReadDeadline(time.Now().Add(-time.Second))
	if _, _, err := m.ReadFrom(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	done := make(chan error)
	m.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	go func() {
		_, _, err := m.ReadFrom(make([]byte, 10))
		done <- err
	}()
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a blocked read at its deadline: %v", err)
	}
	m.SetReadDeadline(time.Time{})
	go func() {
		_, _, err := m.ReadFrom(make([]byte, 10))
		done <- err
	}()
	m.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a blocked read at Close: %v", err)
	}
	// The socket itself is still the caller's, and works.
	if _, err := pc.WriteTo([]byte("x"), pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
}

func TestMuxVirtualAddresses(t *testing.T) {
	pc := loopUDP(t)
	c := NewClient(pc, nil)
	m := NewMux(pc, c)
	defer m.Close()
	r1, r2 := netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")
	// One ticket allocated at two addresses of one relay: one channel ID.
	tk := testTicket()
	tt, _ := ticket.Parse(tk)
	ch1, _, err1 := c.open(r1, nil, 0, tk, tt)
	ch2, _, err2 := c.open(r2, nil, 0, tk, tt)
	if err1 != nil || err2 != nil || ch1.ID() != ch2.ID() {
		t.Fatal(err1, err2)
	}
	a1, a2 := m.VirtualAddr(ch1), m.VirtualAddr(ch2)
	if a1 == a2 {
		t.Fatalf("two channels share the virtual address %v", a1)
	}
	for _, a := range []netip.AddrPort{a1, a2} {
		if !m.IsVirtual(a) || !VirtualPrefix.Contains(a.Addr()) || a.Port() == 0 {
			t.Errorf("%v is not a virtual address", a)
		}
	}
	if m.VirtualAddr(ch1) != a1 || m.Channel(a1) != ch1 || m.Channel(a2) != ch2 {
		t.Error("virtual addresses are not stable")
	}
	if m.IsVirtual(r1) {
		t.Error("a real address is virtual")
	}
	ch1.Close()
	if m.Channel(a1) != nil {
		t.Error("a closed channel keeps its virtual address")
	}
	if _, err := m.WriteToUDPAddrPort([]byte{0xC1}, a1); !errors.Is(err, errNoChannel) {
		t.Errorf("write to a closed channel's address: %v", err)
	}
	if err := ch1.Send([]byte{1}); !errors.Is(err, ErrChannelClosed) {
		t.Errorf("Send on a closed channel: %v", err)
	}
}
