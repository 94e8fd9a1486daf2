package natlab_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/parley-p2p/parley/natlab"
)

// A host behind a NAT talks to a server on the emulated internet; the server
// sees the NAT's public address.
func Example() {
	w := natlab.New(natlab.Config{Seed: 1})
	defer w.Close()
	inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	lan := w.NewNetwork("lan", netip.MustParsePrefix("192.168.1.0/24"))
	nat := w.NewNAT("nat", natlab.NATConfig{
		Inside:    lan,
		Outside:   inet,
		Mapping:   natlab.EndpointIndependent,
		Filtering: natlab.AddressAndPortDependent,
	})
	alice := w.NewHost("alice", lan, natlab.Link{Delay: 10 * time.Millisecond, Rate: 100e6})
	server := w.NewHost("server", inet, natlab.Link{})

	ctx := context.Background()
	var pl natlab.PacketListener = alice // what production code is given
	pc, _ := pl.ListenPacket(ctx, "udp4", ":5000")
	defer pc.Close()
	sc, _ := server.ListenPacket(ctx, "udp4", ":3478")
	defer sc.Close()

	pc.WriteTo([]byte("hello"), sc.LocalAddr())
	buf := make([]byte, 1500)
	n, from, _ := sc.ReadFrom(buf)
	fmt.Printf("alice %v sent %q; server saw %v (NAT %v)\n", alice.Addr(), buf[:n], from, nat.PublicAddr())

	sc.WriteTo([]byte("hi"), from)
	n, from, _ = pc.ReadFrom(buf)
	fmt.Printf("alice got %q from %v\n", buf[:n], from.(*net.UDPAddr))
	// Output:
	// alice 192.168.1.2 sent "hello"; server saw 203.0.113.2:5000 (NAT 203.0.113.2)
	// alice got "hi" from 203.0.113.3:3478
}
