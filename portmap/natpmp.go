package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// NAT-PMP, RFC 6886. Requests go to the gateway's UDP port 5351 and the
// answers come back from it. Every field is big-endian.
//
// External address request (§3.2), 2 bytes:
//
//	0  1  version: 0
//	1  1  opcode: 0
//
// External address response, 12 bytes:
//
//	0  1  version: 0
//	1  1  opcode: 128
//	2  2  result code
//	4  4  seconds since start of epoch
//	8  4  external IPv4 address
//
// UDP mapping request (§3.3), 12 bytes; lifetime 0 deletes (§3.4):
//
//	0  1  version: 0
//	1  1  opcode: 1 (UDP)
//	2  2  reserved: 0
//	4  2  internal port
//	6  2  suggested external port (0: no preference)
//	8  4  requested lifetime in seconds
//
// UDP mapping response, 16 bytes:
//
//	0  1  version: 0
//	1  1  opcode: 129
//	2  2  result code
//	4  4  seconds since start of epoch
//	8  2  internal port
//	10 2  mapped external port
//	12 4  lifetime in seconds
const (
	pmpPort    = 5351
	pmpVersion = 0

	pmpOpAddr   = 0
	pmpOpMapUDP = 1
	pmpOpReply  = 0x80 // set in a response's opcode

	pmpAddrRequestLen  = 2
	pmpMapRequestLen   = 12
	pmpAddrResponseLen = 12
	pmpMapResponseLen  = 16
)

// pmpResult is a NAT-PMP result code (RFC 6886 §3.5).
type pmpResult uint16

const (
	pmpSuccess            pmpResult = 0
	pmpUnsupportedVersion pmpResult = 1
	pmpNotAuthorized      pmpResult = 2 // the box supports mapping but it is turned off
	pmpNetworkFailure     pmpResult = 3 // e.g. the box has no DHCP lease yet
	pmpOutOfResources     pmpResult = 4
	pmpUnsupportedOpcode  pmpResult = 5
)

func (r pmpResult) String() string {
	switch r {
	case pmpSuccess:
		return "SUCCESS"
	case pmpUnsupportedVersion:
		return "UNSUPPORTED_VERSION"
	case pmpNotAuthorized:
		return "NOT_AUTHORIZED"
	case pmpNetworkFailure:
		return "NETWORK_FAILURE"
	case pmpOutOfResources:
		return "OUT_OF_RESOURCES"
	case pmpUnsupportedOpcode:
		return "UNSUPPORTED_OPCODE"
	}
	return fmt.Sprintf("result %d", uint16(r))
}

// appendPMPAddrRequest appends an external address request to b.
func appendPMPAddrRequest(b []byte) []byte {
	return append(b, pmpVersion, pmpOpAddr)
}

// appendPMPMapRequest appends a UDP mapping request to b: for
// internalPort, suggesting externalPort (0 for any), for lifetime seconds
// (0 deletes the mapping).
func appendPMPMapRequest(b []byte, internalPort, externalPort uint16, lifetime uint32) []byte {
	b = append(b, pmpVersion, pmpOpMapUDP, 0, 0)
	b = binary.BigEndian.AppendUint16(b, internalPort)
	b = binary.BigEndian.AppendUint16(b, externalPort)
	return binary.BigEndian.AppendUint32(b, lifetime)
}

// pmpResponse is a parsed NAT-PMP response. Which fields are set depends
// on Op: External for pmpOpReply|pmpOpAddr, the ports and Lifetime for
// pmpOpReply|pmpOpMapUDP.
type pmpResponse struct {
	Op     uint8
	Result pmpResult
	Epoch  uint32

	External netip.Addr

	InternalPort uint16
	ExternalPort uint16
	Lifetime     uint32
}

var errPMPShort = errors.New("nat-pmp: short response")

// parsePMPResponse parses a NAT-PMP response. Only the version, opcode and
// result code are required to be present when the result is not success:
// RFC 6886 §3.5 lets an error response stop after the epoch, and some
// servers send just 8 bytes. It never panics.
func parsePMPResponse(b []byte) (pmpResponse, error) {
	var r pmpResponse
	if len(b) < 4 {
		return r, errPMPShort
	}
	if b[0] != pmpVersion {
		return r, fmt.Errorf("nat-pmp: version %d, want %d", b[0], pmpVersion)
	}
	r.Op = b[1]
	if r.Op&pmpOpReply == 0 {
		return r, fmt.Errorf("nat-pmp: opcode %d is not a response", r.Op)
	}
	r.Result = pmpResult(binary.BigEndian.Uint16(b[2:4]))
	if len(b) >= 8 {
		r.Epoch = binary.BigEndian.Uint32(b[4:8])
	}
	if r.Result != pmpSuccess {
		return r, nil
	}
	switch r.Op {
	case pmpOpReply | pmpOpAddr:
		if len(b) < pmpAddrResponseLen {
			return r, errPMPShort
		}
		r.External = netip.AddrFrom4([4]byte(b[8:12]))
	case pmpOpReply | pmpOpMapUDP:
		if len(b) < pmpMapResponseLen {
			return r, errPMPShort
		}
		r.InternalPort = binary.BigEndian.Uint16(b[8:10])
		r.ExternalPort = binary.BigEndian.Uint16(b[10:12])
		r.Lifetime = binary.BigEndian.Uint32(b[12:16])
	default:
		return r, fmt.Errorf("nat-pmp: unexpected opcode %d", r.Op)
	}
	return r, nil
}
