package wire

// Initiation packet, §1.1: Noise IK message 1.
//
//	  0   1  0xC1
//	  1   1  type = 1
//	  2   2  reserved, zero
//	  4   8  sender CID: the CID the initiator wants in packets sent to it
//	 12 140  Noise message 1: e (32) || AEAD(s) (32+16) || AEAD(params) (44+16)
//	152  16  mac1 over bytes [0, 152)
//	168  16  mac2 over bytes [0, 168)
const (
	InitiationLen         = 184
	InitiationNoiseLen    = 32 + (32 + 16) + (HandshakeParamsLen + 16)
	InitiationNoiseOffset = 12
	InitiationMAC1Offset  = InitiationNoiseOffset + InitiationNoiseLen
	InitiationMAC2Offset  = InitiationMAC1Offset + macLen

	initiationSenderOffset = 4
	macLen                 = 16
)

// Initiation is a decoded initiation packet.
type Initiation struct {
	SenderCID ConnID
	// Noise is the InitiationNoiseLen-byte Noise message. After
	// ParseInitiation it aliases the parsed buffer.
	Noise []byte
	MAC1  [16]byte
	MAC2  [16]byte
}

// ParseInitiation decodes the initiation packet b, which must be exactly
// InitiationLen bytes with zero reserved bytes.
func ParseInitiation(b []byte) (Initiation, error) {
	if err := checkFixed(b, TypeInitiation, InitiationLen); err != nil {
		return Initiation{}, err
	}
	return Initiation{
		SenderCID: ConnID(b[initiationSenderOffset:]),
		Noise:     b[InitiationNoiseOffset:InitiationMAC1Offset:InitiationMAC1Offset],
		MAC1:      [16]byte(b[InitiationMAC1Offset:]),
		MAC2:      [16]byte(b[InitiationMAC2Offset:]),
	}, nil
}

// Append appends the InitiationLen-byte packet to b. The handshake usually
// appends with zero MACs, then computes mac1 over pkt[:InitiationMAC1Offset]
// and mac2 over pkt[:InitiationMAC2Offset] and copies them in place.
//
// It panics if len(p.Noise) != InitiationNoiseLen: the Noise library always
// produces exactly that many bytes, so anything else is a caller bug that
// must not reach the wire as a malformed packet.
func (p *Initiation) Append(b []byte) []byte {
	if len(p.Noise) != InitiationNoiseLen {
		panic("wire: initiation Noise message has wrong length")
	}
	b = append(b, FormVersion, byte(TypeInitiation), 0, 0)
	b = append(b, p.SenderCID[:]...)
	b = append(b, p.Noise...)
	b = append(b, p.MAC1[:]...)
	return append(b, p.MAC2[:]...)
}
