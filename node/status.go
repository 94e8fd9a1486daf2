package node

import (
	"fmt"
	"time"
)

// Status is the daemon's state as `parley status` shows it.
type Status struct {
	Device      string   `json:"device"` // public key
	Username    string   `json:"username,omitempty"`
	Server      string   `json:"server,omitempty"`
	ServerUp    bool     `json:"server_up"`
	ServerError string   `json:"server_error,omitempty"`
	LocalAddr   string   `json:"local_addr"`
	Reflexive   string   `json:"reflexive,omitempty"`
	NAT         string   `json:"nat"` // public, endpoint-independent, symmetric, udp-blocked, unknown
	Candidates  []string `json:"candidates,omitempty"`
	// Supernode is true while this device volunteers as a relay.
	Supernode bool `json:"supernode"`
	// Supernodes are the relays measured, nearest first.
	Supernodes []SupernodeStatus `json:"supernodes,omitempty"`
	Contacts   []ContactStatus   `json:"contacts"`
}

// SupernodeStatus is one measured relay.
type SupernodeStatus struct {
	Device string        `json:"device"`
	Addr   string        `json:"addr"`
	RTT    time.Duration `json:"rtt"`
}

// ContactStatus explains the path to one contact.
type ContactStatus struct {
	Username string `json:"username"`
	State    string `json:"state"`
	Online   bool   `json:"online"`
	Device   string `json:"device,omitempty"` // the device the path leads to
	// Path is "direct", "relayed" or "none".
	Path    string        `json:"path"`
	Remote  string        `json:"remote,omitempty"` // the peer address the session sends to
	Relay   string        `json:"relay,omitempty"`  // the relay's address when relayed
	RTT     time.Duration `json:"rtt,omitempty"`
	NAT     string        `json:"nat"`      // ours
	PeerNAT string        `json:"peer_nat"` // theirs, as they told us
	// Why says why the path is relayed or missing.
	Why string `json:"why,omitempty"`
}

// Status reports the daemon's state and each contact's path.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Status{
		Device:      n.pub.String(),
		Username:    n.username,
		Server:      n.server,
		ServerUp:    n.serverUp,
		ServerError: n.serverErr,
		LocalAddr:   n.pc.LocalAddr().String(),
		NAT:         n.nat,
		Candidates:  addrStrings(n.candidates),
	}
	if st.NAT == "" {
		st.NAT = "unknown"
	}
	if n.reflexive.IsValid() {
		st.Reflexive = n.reflexive.String()
	}
	st.Supernode = n.volunteering
	for _, sn := range n.supernodes {
		st.Supernodes = append(st.Supernodes, SupernodeStatus{Device: sn.Key.String(), Addr: sn.Addr, RTT: sn.RTT})
	}
	for _, c := range n.contacts {
		cs := ContactStatus{Username: c.Username, State: c.State, Path: "none", NAT: st.NAT, PeerNAT: "unknown"}
		if c.State != "mutual" {
			cs.Why = "not a mutual contact"
			st.Contacts = append(st.Contacts, cs)
			continue
		}
		var chosen *peer
		for _, d := range c.Devices {
			p := n.peers[d.Key]
			if p == nil {
				continue
			}
			cs.Online = cs.Online || p.online
			if chosen == nil || (p.liveLocked() != nil && chosen.liveLocked() == nil) {
				chosen = p
			}
		}
		if chosen == nil {
			cs.Why = "no device registered"
			st.Contacts = append(st.Contacts, cs)
			continue
		}
		p := chosen
		cs.Device = p.key.String()
		if p.peerNAT != "" {
			cs.PeerNAT = p.peerNAT
		}
		if s := p.liveLocked(); s != nil {
			remote := s.CurrentPath().Remote
			cs.RTT = s.Stats().SmoothedRTT
			if ch := n.mux.Channel(remote); ch != nil {
				cs.Path = "relayed"
				cs.Relay = ch.Relay()
				cs.Remote = ""
				cs.Why = p.why
				if cs.Why == "" {
					cs.Why = "no direct path answered probes"
				}
				if why := natWhy(st.NAT, cs.PeerNAT); why != "" {
					cs.Why = why + " (" + cs.Why + ")"
				}
			} else {
				cs.Path = "direct"
				cs.Remote = remote.String()
			}
		} else {
			switch {
			case p.why != "":
				cs.Why = p.why
			case !p.online:
				cs.Why = "offline; no session"
			default:
				cs.Why = "no session yet (one is set up on first use)"
			}
		}
		st.Contacts = append(st.Contacts, cs)
	}
	return st
}

// natWhy explains from the two sides' NAT types why a pair cannot be
// direct, or returns "" if they do not explain it.
func natWhy(ours, theirs string) string {
	switch {
	case ours == "udp-blocked":
		return "UDP is blocked on this device's network: relayed over TCP"
	case theirs == "udp-blocked":
		return "UDP is blocked on the peer's network"
	case ours == "symmetric" && theirs == "symmetric":
		return "both sides are behind symmetric NATs, which map every destination to a new port, so hole punching cannot connect them"
	case ours == "symmetric" && theirs == "endpoint-independent":
		return "our NAT is symmetric (a new port per destination), so our probes reach the peer's NAT from ports it never sent to, and it filters them"
	case ours == "endpoint-independent" && theirs == "symmetric":
		return "the peer's NAT is symmetric (a new port per destination), so its probes reach our NAT from ports we never sent to, and it filters them"
	}
	return ""
}

// String renders a contact's path on one line, for the CLI.
func (c ContactStatus) String() string {
	switch c.Path {
	case "direct":
		return fmt.Sprintf("%s: direct to %s, rtt %v (NAT: ours %s, theirs %s)", c.Username, c.Remote, c.RTT.Round(100*time.Microsecond), c.NAT, c.PeerNAT)
	case "relayed":
		return fmt.Sprintf("%s: relayed via %s, rtt %v (NAT: ours %s, theirs %s): %s", c.Username, c.Relay, c.RTT.Round(100*time.Microsecond), c.NAT, c.PeerNAT, c.Why)
	}
	on := "offline"
	if c.Online {
		on = "online"
	}
	return fmt.Sprintf("%s (%s, %s): no session: %s", c.Username, c.State, on, c.Why)
}
