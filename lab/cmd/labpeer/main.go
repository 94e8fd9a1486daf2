// Command labpeer is a tiny UDP prober that the lab's tests run inside
// network namespaces, until the real parley daemon can take its place. It
// speaks a line protocol on UDP and TCP, and reports what it sees as lines
// on stdout.
//
//	labpeer serve -udp ADDR [-tcp ADDR]
//		Reflect: answer "WHO <tag>" with "SEEN <tag> <source address>" (a
//		STUN-like binding service); over TCP, write "SEEN <source>\n" to
//		each connection. Prints READY, exits at EOF on stdin.
//	labpeer map -bind ADDR -to ADDR[,ADDR...]
//		From one socket ask each server what it sees; print
//		"MAPPED <server> <address>" or "TIMEOUT <server>" for each.
//	labpeer tcp -to ADDR
//		Dial, print the server's SEEN line, or TIMEOUT.
//	labpeer punch -bind ADDR -stun ADDR -nonce N [-strict] [-ttl N]
//		Hole punching. Prints "MAPPED <address>" from the stun server, then
//		obeys stdin: "PEER <address>" sets the peer's reflexive address,
//		"OPEN" sends one probe with IP TTL -ttl (enough to pass our own
//		NAT, not to reach the peer's) and prints OPENED, "GO" starts
//		probing every -interval. Probes are "PROBE <nonce>", answered with
//		"ACK <nonce>" to wherever they came from; with -strict only packets
//		from the peer's signalled address count, otherwise a probe from
//		any address with the right nonce is answered and probed back.
//		Events: "PROBE <from>", "IGNORED <from>", "CONNECTED <from>" (an
//		ACK came back: both directions work), "FAILED" when -timeout
//		passes after GO without CONNECTED. Exits at EOF on stdin.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "labpeer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: labpeer serve|map|tcp|punch [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	switch args[0] {
	case "serve":
		udp := fs.String("udp", "", "UDP address to reflect on")
		tcp := fs.String("tcp", "", "TCP address to reflect on")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return serve(ctx, *udp, *tcp)
	case "map":
		bind := fs.String("bind", ":0", "local UDP address")
		to := fs.String("to", "", "comma-separated servers")
		timeout := fs.Duration("timeout", 2*time.Second, "per server")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return mapping(*bind, strings.Split(*to, ","), *timeout)
	case "tcp":
		to := fs.String("to", "", "server")
		timeout := fs.Duration("timeout", 2*time.Second, "dial and read timeout")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return dialTCP(*to, *timeout)
	case "punch":
		var p puncher
		fs.StringVar(&p.bind, "bind", ":0", "local UDP address")
		fs.StringVar(&p.stun, "stun", "", "reflector address")
		fs.StringVar(&p.nonce, "nonce", "", "shared secret tagging our probes")
		fs.BoolVar(&p.strict, "strict", false, "only accept packets from the signalled peer address")
		fs.IntVar(&p.ttl, "ttl", 2, "IP TTL of the OPEN probe")
		fs.DurationVar(&p.timeout, "timeout", 2*time.Second, "give up this long after GO")
		fs.DurationVar(&p.interval, "interval", 20*time.Millisecond, "probe interval")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if p.nonce == "" || p.stun == "" {
			return errors.New("punch needs -nonce and -stun")
		}
		return p.run(ctx)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// serve runs the reflector until ctx is done or stdin reaches EOF.
func serve(ctx context.Context, udpAddr, tcpAddr string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The test closes stdin to stop us.
		_, _ = bufio.NewReader(os.Stdin).ReadString(0)
		cancel()
	}()
	if udpAddr != "" {
		c, err := net.ListenPacket("udp4", udpAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				if tag, ok := strings.CutPrefix(string(buf[:n]), "WHO "); ok {
					c.WriteTo([]byte("SEEN "+tag+" "+from.String()), from)
				}
			}
		}()
	}
	if tcpAddr != "" {
		ln, err := net.Listen("tcp4", tcpAddr)
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "SEEN %s\n", c.RemoteAddr())
				c.Close()
			}
		}()
	}
	fmt.Println("READY")
	<-ctx.Done()
	return nil
}

// mapping asks each server, from one socket, which address it sees us at:
// the RFC 5780 mapping test.
func mapping(bind string, servers []string, timeout time.Duration) error {
	c, err := net.ListenPacket("udp4", bind)
	if err != nil {
		return err
	}
	defer c.Close()
	for i, s := range servers {
		to, err := net.ResolveUDPAddr("udp4", s)
		if err != nil {
			return err
		}
		seen, err := ask(c, to, fmt.Sprint(i), timeout)
		if err != nil {
			fmt.Println("TIMEOUT", s)
			continue
		}
		fmt.Println("MAPPED", s, seen)
	}
	return nil
}

// ask sends "WHO tag" to to until it answers or timeout passes, and returns
// the address it saw.
func ask(c net.PacketConn, to net.Addr, tag string, timeout time.Duration) (string, error) {
	defer c.SetReadDeadline(time.Time{})
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		if _, err := c.WriteTo([]byte("WHO "+tag), to); err != nil {
			return "", err
		}
		next := time.Now().Add(100 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		c.SetReadDeadline(next)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break // resend
			}
			f := strings.Fields(string(buf[:n]))
			if len(f) == 3 && f[0] == "SEEN" && f[1] == tag {
				return f[2], nil
			}
		}
	}
	return "", os.ErrDeadlineExceeded
}

func dialTCP(to string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp4", to, timeout)
	if err != nil {
		fmt.Println("TIMEOUT", to)
		return nil
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("TIMEOUT", to)
		return nil
	}
	fmt.Print(line)
	return nil
}

// puncher is the state of `labpeer punch`. Everything after setup happens
// on run's goroutine.
type puncher struct {
	bind, stun, nonce string
	strict            bool
	ttl               int
	timeout, interval time.Duration

	conn     *net.UDPConn
	peer     netip.AddrPort   // signalled reflexive address of the peer
	targets  []netip.AddrPort // where GO sends probes
	seen     map[string]bool  // events already printed
	probing  bool
	deadline time.Time
	done     bool // CONNECTED or FAILED printed
}

type packet struct {
	data string
	from netip.AddrPort
}

func (p *puncher) run(ctx context.Context) error {
	c, err := net.ListenPacket("udp4", p.bind)
	if err != nil {
		return err
	}
	p.conn = c.(*net.UDPConn)
	defer p.conn.Close()
	stun, err := net.ResolveUDPAddr("udp4", p.stun)
	if err != nil {
		return err
	}
	mapped, err := ask(p.conn, stun, "punch", 2*time.Second)
	if err != nil {
		return fmt.Errorf("ask %v for our mapping: %w", stun, err)
	}
	fmt.Println("MAPPED", mapped)
	p.seen = make(map[string]bool)

	packets := make(chan packet)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := p.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				close(packets)
				return
			}
			packets <- packet{string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}
		}
	}()
	lines := make(chan string)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(os.Stdin)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			if err := p.command(line); err != nil {
				return err
			}
		case pkt, ok := <-packets:
			if !ok {
				return nil
			}
			p.receive(pkt)
		case now := <-tick.C:
			if !p.probing {
				continue
			}
			for _, t := range p.targets {
				p.send("PROBE "+p.nonce, t)
			}
			if !p.done && now.After(p.deadline) {
				p.done = true
				fmt.Println("FAILED")
			}
		}
	}
}

func (p *puncher) command(line string) error {
	verb, arg, _ := strings.Cut(line, " ")
	switch verb {
	case "PEER":
		ap, err := netip.ParseAddrPort(arg)
		if err != nil {
			return err
		}
		p.peer = ap
		p.addTarget(ap)
	case "OPEN":
		if err := p.setTTL(p.ttl); err != nil {
			return err
		}
		p.send("PROBE "+p.nonce, p.peer)
		if err := p.setTTL(64); err != nil {
			return err
		}
		fmt.Println("OPENED")
	case "GO":
		p.probing = true
		p.deadline = time.Now().Add(p.timeout)
		for _, t := range p.targets {
			p.send("PROBE "+p.nonce, t)
		}
		fmt.Println("PROBING")
	default:
		return fmt.Errorf("unknown command %q", line)
	}
	return nil
}

func (p *puncher) receive(pkt packet) {
	verb, nonce, _ := strings.Cut(pkt.data, " ")
	if nonce != p.nonce || (verb != "PROBE" && verb != "ACK") {
		return
	}
	if p.strict && pkt.from != p.peer {
		p.event("IGNORED", pkt.from)
		return
	}
	switch verb {
	case "PROBE":
		p.event("PROBE", pkt.from)
		p.send("ACK "+p.nonce, pkt.from)
		if !p.strict && p.addTarget(pkt.from) {
			// Probe back at once: our own ACK proves nothing to us.
			p.send("PROBE "+p.nonce, pkt.from)
		}
	case "ACK":
		if p.event("CONNECTED", pkt.from) {
			p.done = true
		}
	}
}

// event prints "what from" the first time it happens and reports whether it
// did.
func (p *puncher) event(what string, from netip.AddrPort) bool {
	key := what + " " + from.String()
	if p.seen[key] {
		return false
	}
	p.seen[key] = true
	fmt.Println(key)
	return true
}

func (p *puncher) addTarget(ap netip.AddrPort) bool {
	for _, t := range p.targets {
		if t == ap {
			return false
		}
	}
	p.targets = append(p.targets, ap)
	return true
}

func (p *puncher) send(msg string, to netip.AddrPort) {
	// Errors (an ICMP error reported on an earlier send) do not matter to
	// a prober: it just tries again.
	p.conn.WriteToUDPAddrPort([]byte(msg), to)
}

func (p *puncher) setTTL(ttl int) error {
	rc, err := p.conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, ttl)
	})
	return errors.Join(err, serr)
}
