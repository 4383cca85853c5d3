package bench

import (
	"crypto/sha256"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/zeebo/blake3"
)

// Limits are the hardware limits measured in the same run as the
// scenarios, so figures can be read against what the machine can do.
type Limits struct {
	SHA256MBps   float64 `json:"sha256MBps"`
	BLAKE3MBps   float64 `json:"blake3MBps"`
	LoopbackMBps float64 `json:"loopbackTCPMBps"`
	DiskMBps     float64 `json:"diskWriteFsyncMBps"`
}

func rate(bytes int64, d time.Duration) float64 { return float64(bytes) / 1e6 / d.Seconds() }

// MeasureLimits measures single-core SHA-256 and BLAKE3, a loopback TCP
// stream, and writing with fsync in dir.
func MeasureLimits(dir string, quick bool) Limits {
	size := int64(512 << 20)
	if quick {
		size = 128 << 20
	}
	buf := make([]byte, 1<<20)
	var l Limits
	start := time.Now()
	h := sha256.New()
	for n := int64(0); n < size; n += int64(len(buf)) {
		h.Write(buf)
	}
	l.SHA256MBps = rate(size, time.Since(start))
	start = time.Now()
	b := blake3.New()
	for n := int64(0); n < size; n += int64(len(buf)) {
		b.Write(buf)
	}
	l.BLAKE3MBps = rate(size, time.Since(start))
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		go func() {
			c, err := ln.Accept()
			if err == nil {
				io.Copy(io.Discard, c)
				c.Close()
			}
		}()
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			start = time.Now()
			for n := int64(0); n < size; n += int64(len(buf)) {
				c.Write(buf)
			}
			c.Close()
			l.LoopbackMBps = rate(size, time.Since(start))
		}
		ln.Close()
	}
	f, err := os.Create(filepath.Join(dir, "disk-probe"))
	if err == nil {
		start = time.Now()
		for n := int64(0); n < size/2; n += int64(len(buf)) {
			f.Write(buf)
		}
		f.Sync()
		l.DiskMBps = rate(size/2, time.Since(start))
		f.Close()
		os.Remove(f.Name())
	}
	return l
}
