package relay

import (
	"net"
	"net/netip"
)

// Batched socket I/O, for the supernode's forwarding path.
//
// A relayed packet costs the relay itself a fraction of a microsecond
// (BenchmarkForward); what it costs the machine is the kernel's work, and on
// one core that was a recvmsg and a sendmsg per packet. So on Linux, when the
// socket is a *net.UDPConn, the Mux reads up to batchSize datagrams with one
// recvmmsg(2), the Server turns that batch's SENDs into DELIVERs in place,
// and sends them all with one sendmmsg(2), in which a run of DELIVERs to the
// same address and of the same size travels as one UDP GSO message
// (UDP_SEGMENT, Linux 4.18). Elsewhere, and on other sockets (natlab's), the
// same code reads and writes one datagram per call.

// batchSize is how many datagrams the Mux reads at once. Each slot holds the
// largest datagram (64 KiB, as the single-read loop did), so a Mux reserves
// 2 MiB of address space; only the pages packets touch become resident.
// Beyond 32 the system call's fixed cost is already small beside the
// per-packet work.
const batchSize = 32

// Limits of one GSO message: the kernel's UDP_MAX_SEGMENTS (64 before Linux
// 6.9), and a UDP datagram's payload with room for any IP header.
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65000
)

// rxMsg is one slot of a batch read.
type rxMsg struct {
	buf  []byte // the slot: MaxPacketSize+1 bytes to read into
	n    int    // bytes received
	from netip.AddrPort
}

// batchReader reads datagrams, several per call where it can. It is used by
// one goroutine.
type batchReader interface {
	// readBatch blocks until at least one datagram has arrived, reads up to
	// len(msgs) of them and returns how many. It fails like ReadFrom,
	// including on the socket's read deadline.
	readBatch(msgs []rxMsg) (int, error)
}

// newBatchReader returns the fastest reader for pc and how many slots it
// fills at once.
func newBatchReader(pc net.PacketConn) (batchReader, int) {
	if r := newMmsgReader(pc, batchSize); r != nil {
		return r, batchSize
	}
	ar, _ := pc.(addrPortReader)
	return plainReader{pc, ar}, 1
}

// plainReader reads one datagram per call.
type plainReader struct {
	pc net.PacketConn
	ar addrPortReader // pc, if it can read without allocating a net.Addr
}

func (r plainReader) readBatch(msgs []rxMsg) (int, error) {
	m := &msgs[0]
	var err error
	if r.ar != nil {
		m.n, m.from, err = r.ar.ReadFromUDPAddrPort(m.buf)
	} else {
		var a net.Addr
		m.n, a, err = r.pc.ReadFrom(m.buf)
		m.from = netip.AddrPort{}
		if ua, ok := a.(*net.UDPAddr); ok {
			m.from = ua.AddrPort()
		}
	}
	if err != nil {
		return 0, err
	}
	return 1, nil
}

// txMsg is one datagram queued in a txBatch.
type txMsg struct {
	b       []byte // aliases the received SEND, its type byte rewritten
	to      netip.AddrPort
	payload int  // the opaque bytes, for Stats
	failed  bool // set by the writer
}

// txBatch collects the DELIVERs that one batch of received packets yields,
// to be sent together by Server.flush. It also carries what the batch's
// packets share: the time and the last channel looked up. It belongs to one
// goroutine (a Mux's reader); its zero value is ready to use.
type txBatch struct {
	msgs    []txMsg
	now     int64       // Unix nanoseconds, read once per batch; 0 until then
	last    *allocation // the allocation of the batch's last SEND, or nil
	scratch txScratch   // the system call's arguments, reused
}

// reset empties tx for the next batch.
func (tx *txBatch) reset() {
	clear(tx.msgs) // drop the references to the read buffers
	tx.msgs = tx.msgs[:0]
	tx.now = 0
	tx.last = nil
}

// batchWriter sends the datagrams of a txBatch, several per call where it
// can. It may be used by several goroutines, each with its own txBatch.
type batchWriter interface {
	// writeBatch sends every message of tx, in order for each address. It
	// marks the ones it could not send as failed and returns the last
	// error.
	writeBatch(tx *txBatch) error
}

// newBatchWriter returns the fastest writer for pc.
func newBatchWriter(pc net.PacketConn) batchWriter {
	if w := newMmsgWriter(pc); w != nil {
		return w
	}
	return newPlainWriter(pc)
}

// plainWriter writes one datagram per call.
type plainWriter struct {
	pc  net.PacketConn
	wap addrPortWriter // pc, if it can write without allocating a net.Addr
}

func newPlainWriter(pc net.PacketConn) plainWriter {
	wap, _ := pc.(addrPortWriter)
	return plainWriter{pc, wap}
}

func (w plainWriter) write(b []byte, to netip.AddrPort) error {
	var err error
	if w.wap != nil {
		_, err = w.wap.WriteToUDPAddrPort(b, to)
	} else {
		_, err = w.pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
	}
	return err
}

func (w plainWriter) writeBatch(tx *txBatch) error {
	var err error
	for i := range tx.msgs {
		m := &tx.msgs[i]
		if e := w.write(m.b, m.to); e != nil {
			m.failed, err = true, e
		}
	}
	return err
}
