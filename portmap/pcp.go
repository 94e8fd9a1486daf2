package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// PCP, RFC 6887, on the same port as NAT-PMP (5351). Every field is
// big-endian; addresses are 16 bytes, IPv4 ones IPv4-mapped (§5). PCP
// runs over IPv4 or IPv6, to the gateway's address in either family.
//
// Request header (§7.1), 24 bytes:
//
//	0  1  version: 2
//	1  1  R = 0 (bit 7) | opcode
//	2  2  reserved: 0
//	4  4  requested lifetime in seconds (MAP: 0 deletes)
//	8  16 the client's own IP address, as it sends from
//
// Response header (§7.2), 24 bytes:
//
//	0  1  version: 2
//	1  1  R = 1 (bit 7) | opcode
//	2  1  reserved
//	3  1  result code
//	4  4  lifetime: granted, or on an error how long the error holds
//	8  4  epoch time
//	12 12 reserved
//
// MAP opcode body (§11.1), request and response, 36 bytes after the header:
//
//	0  12 mapping nonce: random, the same for every request about a mapping
//	12 1  protocol: 17 (UDP)
//	13 3  reserved
//	16 2  internal port
//	18 2  suggested (request) or assigned (response) external port
//	20 16 suggested or assigned external address
//
// ANNOUNCE (opcode 0, §14.1) is the header alone. The client sends it as a
// probe, to learn whether a PCP server is there. A server that starts, or
// whose external address changes, multicasts an unsolicited ANNOUNCE
// response to 224.0.0.1:5350 and [ff02::1]:5350 (§14.1.3): a header with
// result SUCCESS, lifetime 0 and the new epoch time, which the client hears
// to map again at once (see parseAnnouncement).
//
// A NAT-PMP-only server answers any request whose version is not 0 with a
// NAT-PMP "unsupported version" response: version 0, result code 1 (RFC
// 6886 §3.5, RFC 6887 §9). parsePCPResponse reports that as
// errPCPSpeaksNATPMP, and the client falls back to NAT-PMP.
const (
	pcpVersion = 2

	pcpOpAnnounce = 0
	pcpOpMap      = 1
	pcpOpReply    = 0x80 // the R bit, set in a response's opcode

	pcpHeaderLen = 24
	pcpMapLen    = 36
	pcpNonceLen  = 12

	pcpProtoUDP = 17
)

// pcpResult is a PCP result code (RFC 6887 §7.4).
type pcpResult uint8

const (
	pcpSuccess             pcpResult = 0
	pcpUnsuppVersion       pcpResult = 1
	pcpNotAuthorized       pcpResult = 2
	pcpMalformedRequest    pcpResult = 3
	pcpUnsuppOpcode        pcpResult = 4
	pcpUnsuppOption        pcpResult = 5
	pcpMalformedOption     pcpResult = 6
	pcpNetworkFailure      pcpResult = 7
	pcpNoResources         pcpResult = 8
	pcpUnsuppProtocol      pcpResult = 9
	pcpUserExQuota         pcpResult = 10
	pcpCannotProvideExt    pcpResult = 11
	pcpAddressMismatch     pcpResult = 12
	pcpExcessiveRemotePeer pcpResult = 13
)

var pcpResultNames = [...]string{
	pcpSuccess:             "SUCCESS",
	pcpUnsuppVersion:       "UNSUPP_VERSION",
	pcpNotAuthorized:       "NOT_AUTHORIZED",
	pcpMalformedRequest:    "MALFORMED_REQUEST",
	pcpUnsuppOpcode:        "UNSUPP_OPCODE",
	pcpUnsuppOption:        "UNSUPP_OPTION",
	pcpMalformedOption:     "MALFORMED_OPTION",
	pcpNetworkFailure:      "NETWORK_FAILURE",
	pcpNoResources:         "NO_RESOURCES",
	pcpUnsuppProtocol:      "UNSUPP_PROTOCOL",
	pcpUserExQuota:         "USER_EX_QUOTA",
	pcpCannotProvideExt:    "CANNOT_PROVIDE_EXTERNAL",
	pcpAddressMismatch:     "ADDRESS_MISMATCH",
	pcpExcessiveRemotePeer: "EXCESSIVE_REMOTE_PEERS",
}

func (r pcpResult) String() string {
	if int(r) < len(pcpResultNames) {
		return pcpResultNames[r]
	}
	return fmt.Sprintf("result %d", uint8(r))
}

// pcpNonce identifies one mapping across its MAP requests (§11.1).
type pcpNonce [pcpNonceLen]byte

// pcpAddr returns a as PCP's 16-byte address: IPv4-mapped for IPv4. The
// zero Addr becomes the all-zeros address of the family of like, which
// means "no preference" in a MAP request and asks for a mapping in that
// family (§11.1, §5): ::ffff:0.0.0.0 for IPv4, :: for IPv6.
func pcpAddr(a, like netip.Addr) [16]byte {
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
		if like.Is6() && !like.Is4In6() {
			a = netip.IPv6Unspecified()
		}
	}
	return a.As16()
}

// appendPCPHeader appends a request header to b.
func appendPCPHeader(b []byte, op uint8, lifetime uint32, client netip.Addr) []byte {
	b = append(b, pcpVersion, op, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lifetime)
	a := pcpAddr(client, client)
	return append(b, a[:]...)
}

// appendPCPAnnounce appends an ANNOUNCE request from client to b.
func appendPCPAnnounce(b []byte, client netip.Addr) []byte {
	return appendPCPHeader(b, pcpOpAnnounce, 0, client)
}

// appendPCPMap appends a MAP request for UDP to b: from client (the
// address the request is sent from) for internalPort, suggesting
// external (either part may be zero for "no preference"), for lifetime
// seconds (0 deletes the mapping). The mapping asked for is in client's
// family: a NAT mapping for an IPv4 client, and for an IPv6 client
// whatever the gateway does for IPv6, a firewall pinhole to client's
// own address where there is no NAT (§11.1).
func appendPCPMap(b []byte, nonce pcpNonce, client netip.Addr, internalPort uint16, external netip.AddrPort, lifetime uint32) []byte {
	b = appendPCPHeader(b, pcpOpMap, lifetime, client)
	b = append(b, nonce[:]...)
	b = append(b, pcpProtoUDP, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, internalPort)
	b = binary.BigEndian.AppendUint16(b, external.Port())
	a := pcpAddr(external.Addr(), client)
	return append(b, a[:]...)
}

// pcpResponse is a parsed PCP response. The MAP fields are set when Op is
// pcpOpReply|pcpOpMap and Result is pcpSuccess.
type pcpResponse struct {
	Op       uint8
	Result   pcpResult
	Lifetime uint32
	Epoch    uint32

	Nonce        pcpNonce
	Protocol     uint8
	InternalPort uint16
	External     netip.AddrPort
}

var (
	errPCPShort = errors.New("pcp: short response")
	// errPCPSpeaksNATPMP is a NAT-PMP server's answer to a PCP request.
	errPCPSpeaksNATPMP = errors.New("pcp: the gateway speaks only NAT-PMP")
)

// parsePCPResponse parses a PCP response. It returns errPCPSpeaksNATPMP
// for a NAT-PMP "unsupported version" answer. Responses whose opcode
// carries no body we know are returned with the header alone. A MAP body
// is parsed only on success: an error response need not carry it
// (§7.2). It never panics.
func parsePCPResponse(b []byte) (pcpResponse, error) {
	var r pcpResponse
	if len(b) >= 4 && b[0] == pmpVersion {
		if pmpResult(binary.BigEndian.Uint16(b[2:4])) == pmpUnsupportedVersion {
			return r, errPCPSpeaksNATPMP
		}
		return r, errors.New("pcp: NAT-PMP response to a PCP request")
	}
	if len(b) < pcpHeaderLen {
		return r, errPCPShort
	}
	if b[0] != pcpVersion {
		return r, fmt.Errorf("pcp: version %d, want %d", b[0], pcpVersion)
	}
	r.Op = b[1]
	if r.Op&pcpOpReply == 0 {
		return r, fmt.Errorf("pcp: opcode %d is not a response", r.Op)
	}
	r.Result = pcpResult(b[3])
	r.Lifetime = binary.BigEndian.Uint32(b[4:8])
	r.Epoch = binary.BigEndian.Uint32(b[8:12])
	if r.Op != pcpOpReply|pcpOpMap || r.Result != pcpSuccess {
		return r, nil
	}
	if len(b) < pcpHeaderLen+pcpMapLen {
		return r, errPCPShort
	}
	m := b[pcpHeaderLen:]
	r.Nonce = pcpNonce(m[:pcpNonceLen])
	r.Protocol = m[12]
	r.InternalPort = binary.BigEndian.Uint16(m[16:18])
	r.External = netip.AddrPortFrom(
		netip.AddrFrom16([16]byte(m[20:36])).Unmap(),
		binary.BigEndian.Uint16(m[18:20]),
	)
	return r, nil
}
