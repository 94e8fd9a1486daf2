package transport

import "github.com/parley-p2p/parley/transport/internal/handshake"

func handshakeMACKey(pub PublicKey) [32]byte { return handshake.MAC1Key(pub) }

func mac1(k [32]byte, msg []byte) []byte { return handshake.MAC1(k, msg) }
