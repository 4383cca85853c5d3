package testnet

import (
	"bytes"
	"sync"
)

// logTailLines is how much of each agent's log a failing test prints.
const logTailLines = 40

// logTail keeps the last logTailBytes written to it: an in-process agent's
// log, printed if the test fails.
type logTail struct {
	mu  sync.Mutex
	buf []byte
}

const logTailBytes = 64 << 10

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) > 2*logTailBytes {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-logTailBytes:]...)
	}
	return len(p), nil
}

// Bytes is a copy of what the log holds.
func (l *logTail) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf)
}

// tailLines is the last n lines of b.
func tailLines(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}
