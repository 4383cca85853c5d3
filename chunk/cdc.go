package chunk

import (
	"errors"
	"io"
	"math/bits"
)

// FastCDC (Xia et al., with the 2020 paper's normalized chunking and
// two-bytes-per-step rolling), written here rather than taken from a
// library because the chunker is the slowest stage of ingest: the
// unrolled gear hash runs at about twice the speed of a byte-at-a-time
// loop. Boundaries are a pure function of the bytes, so every peer cuts
// a NAR the same way.

// gear is the table of 256 pseudo-random 64-bit values the rolling hash
// adds, from a fixed splitmix64 sequence; gearLS is gear shifted left once.
var gear, gearLS [256]uint64

// Masks for normalized chunking around a 64 KiB average (2^16): harder to
// match (18 bits) before the average, easier (14 bits) after it. Their
// bits are spread over the hash, and none is bit 63, so the left-shifted
// masks used on odd bytes lose nothing.
var maskS, maskL, maskSLS, maskLLS uint64

func init() {
	x := uint64(0x7472_6f76_652d_6364) // "trove-cd"
	for i := range gear {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		gear[i] = z ^ (z >> 31)
		gearLS[i] = gear[i] << 1
	}
	maskS, maskL = spreadMask(18), spreadMask(14)
	maskSLS, maskLLS = maskS<<1, maskL<<1
}

// spreadMask sets n bits spread evenly over bits 0..61.
func spreadMask(n int) uint64 {
	var m uint64
	for i := range n {
		m |= 1 << (i * 62 / n)
	}
	if bits.OnesCount64(m) != n {
		panic("cdc: mask collision")
	}
	return m
}

// cutPoint returns the length of the first chunk of data (all of data if
// it is no longer than MinSize, or MaxSize at most).
func cutPoint(data []byte) int {
	n := len(data)
	if n <= MinSize {
		return n
	}
	n = min(n, MaxSize)
	norm := min(n, AvgSize)
	// Small chunks are unlikely (the stricter mask) below AvgSize, large
	// ones above it (the looser mask): FastCDC's normalisation.
	i, fp, cut := gearScan(data, MinSize, norm, 0, maskS, maskSLS)
	if cut {
		return i
	}
	if i, _, cut = gearScan(data, i, n, fp, maskL, maskLLS); cut {
		return i
	}
	return n
}

// gearScan rolls the gear hash fp over data[i:end], two bytes a step, and
// stops after the first byte whose hash has no bit of mask set: it returns
// the length up to that byte and cut, or where it stopped (end, or end-1
// with one byte left for the next scan) and the hash so far.
//
// After byte i the hash is fp<<1 + gear[b_i]; its test against mask equals
// the test of (fp<<2 + gearLS[b_i]) against mask<<1 (maskLS), so the
// intermediate value is tested with the shifted mask.
func gearScan(data []byte, i, end int, fp, mask, maskLS uint64) (int, uint64, bool) {
	for ; i+1 < end; i += 2 {
		fp = (fp << 2) + gearLS[data[i]]
		if fp&maskLS == 0 {
			return i + 1, fp, true
		}
		fp += gear[data[i+1]]
		if fp&mask == 0 {
			return i + 2, fp, true
		}
	}
	return i, fp, false
}

// cdcReader cuts a stream into chunks, in a buffer of 4×MaxSize bytes.
type cdcReader struct {
	r   io.Reader
	buf []byte
	beg int // start of unconsumed data
	end int // end of data read so far
	eof bool
}

func newCDCReader(r io.Reader) *cdcReader {
	return &cdcReader{r: r, buf: make([]byte, 4*MaxSize)}
}

// next returns the next chunk (valid until the following call) or io.EOF.
func (c *cdcReader) next() ([]byte, error) {
	if c.end-c.beg < MaxSize && !c.eof {
		// Slide the unconsumed tail to the front and refill.
		copy(c.buf, c.buf[c.beg:c.end])
		c.end -= c.beg
		c.beg = 0
		for c.end < len(c.buf) && !c.eof {
			n, err := c.r.Read(c.buf[c.end:])
			c.end += n
			if errors.Is(err, io.EOF) {
				c.eof = true
			} else if err != nil {
				return nil, err
			}
		}
	}
	if c.beg == c.end {
		return nil, io.EOF
	}
	n := cutPoint(c.buf[c.beg:c.end])
	chunk := c.buf[c.beg : c.beg+n]
	c.beg += n
	return chunk, nil
}
