package wire

// Cookie reply packet, §1.3, sent instead of a response when the responder
// is under load and the initiation's mac2 is missing or invalid.
//
//	 0   1  0xC1
//	 1   1  type = 3
//	 2   2  reserved, zero
//	 4   8  receiver CID: the initiator's sender CID from the initiation
//	12  24  nonce (random)
//	36  32  encrypted cookie: XChaCha20-Poly1305(16-byte cookie) || 16-byte tag
const (
	CookieReplyLen          = 68
	CookieReplyNonceOffset  = 12
	CookieReplyCookieOffset = CookieReplyNonceOffset + 24
)

// CookieReply is a decoded cookie reply packet.
type CookieReply struct {
	ReceiverCID ConnID
	Nonce       [24]byte
	Cookie      [32]byte // encrypted cookie and its tag
}

// ParseCookieReply decodes the cookie reply packet b, which must be exactly
// CookieReplyLen bytes with zero reserved bytes.
func ParseCookieReply(b []byte) (CookieReply, error) {
	if err := checkFixed(b, TypeCookieReply, CookieReplyLen); err != nil {
		return CookieReply{}, err
	}
	return CookieReply{
		ReceiverCID: ConnID(b[destCIDOffset:]),
		Nonce:       [24]byte(b[CookieReplyNonceOffset:]),
		Cookie:      [32]byte(b[CookieReplyCookieOffset:]),
	}, nil
}

// Append appends the CookieReplyLen-byte packet to b.
func (p *CookieReply) Append(b []byte) []byte {
	b = append(b, FormVersion, byte(TypeCookieReply), 0, 0)
	b = append(b, p.ReceiverCID[:]...)
	b = append(b, p.Nonce[:]...)
	return append(b, p.Cookie[:]...)
}
