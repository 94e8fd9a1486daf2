package wire

// Response packet, §1.2: Noise IK message 2.
//
//	  0   1  0xC1
//	  1   1  type = 2
//	  2   2  reserved, zero
//	  4   8  receiver CID: the initiator's sender CID from the initiation
//	 12   8  sender CID: the CID the responder wants in packets sent to it
//	 20  92  Noise message 2: e (32) || AEAD(params) (44+16)
//	112  16  mac1 over bytes [0, 112)
//	128  16  mac2 over bytes [0, 128)
//
// At 144 bytes it is smaller than the 184-byte initiation it answers, so a
// responder never amplifies traffic towards a forged source address.
const (
	ResponseLen         = 144
	ResponseNoiseLen    = 32 + (HandshakeParamsLen + 16)
	ResponseNoiseOffset = 20
	ResponseMAC1Offset  = ResponseNoiseOffset + ResponseNoiseLen
	ResponseMAC2Offset  = ResponseMAC1Offset + macLen

	responseSenderOffset = 12
)

// Response is a decoded response packet.
type Response struct {
	ReceiverCID ConnID
	SenderCID   ConnID
	// Noise is the ResponseNoiseLen-byte Noise message. After ParseResponse
	// it aliases the parsed buffer.
	Noise []byte
	MAC1  [16]byte
	MAC2  [16]byte
}

// ParseResponse decodes the response packet b, which must be exactly
// ResponseLen bytes with zero reserved bytes.
func ParseResponse(b []byte) (Response, error) {
	if err := checkFixed(b, TypeResponse, ResponseLen); err != nil {
		return Response{}, err
	}
	return Response{
		ReceiverCID: ConnID(b[destCIDOffset:]),
		SenderCID:   ConnID(b[responseSenderOffset:]),
		Noise:       b[ResponseNoiseOffset:ResponseMAC1Offset:ResponseMAC1Offset],
		MAC1:        [16]byte(b[ResponseMAC1Offset:]),
		MAC2:        [16]byte(b[ResponseMAC2Offset:]),
	}, nil
}

// Append appends the ResponseLen-byte packet to b; MACs are filled in the
// same way as for Initiation.Append.
//
// It panics if len(p.Noise) != ResponseNoiseLen (a caller bug).
func (p *Response) Append(b []byte) []byte {
	if len(p.Noise) != ResponseNoiseLen {
		panic("wire: response Noise message has wrong length")
	}
	b = append(b, FormVersion, byte(TypeResponse), 0, 0)
	b = append(b, p.ReceiverCID[:]...)
	b = append(b, p.SenderCID[:]...)
	b = append(b, p.Noise...)
	b = append(b, p.MAC1[:]...)
	return append(b, p.MAC2[:]...)
}
