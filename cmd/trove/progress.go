package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/trove-p2p/trove/fetch"
)

// syncProgress shows a sync's progress: a redrawn line on a terminal,
// a line per finished path when piped, nothing with --json.
type syncProgress struct {
	a         *app
	tty       bool
	quiet     bool
	lastPaths int
	drawn     bool
}

func newSyncProgress(a *app, asJSON bool) *syncProgress {
	return &syncProgress{a: a, tty: a.stderrIsTerminal(), quiet: asJSON}
}

func (p *syncProgress) update(s fetch.Progress) {
	if p.tty {
		rate := 0.0
		if secs := s.Elapsed.Seconds(); secs > 0 {
			rate = float64(s.BytesFetched) / secs
		}
		pct := 100.0
		if s.BytesTotal > 0 {
			pct = 100 * float64(s.BytesDone) / float64(s.BytesTotal)
		}
		line := fmt.Sprintf("%s %3.0f%%  %s / %s  %s/s  paths %d/%d  peers %d  %s",
			bar(pct, 20), pct, humanBytes(uint64(s.BytesDone)), humanBytes(uint64(s.BytesTotal)),
			humanBytes(uint64(rate)), s.PathsDone, s.PathsTotal, s.PeersUsed, s.Elapsed.Round(time.Second))
		fmt.Fprintf(p.a.stderr, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	if p.quiet || s.PathsDone == p.lastPaths {
		return
	}
	p.lastPaths = s.PathsDone
	fmt.Fprintf(p.a.stderr, "fetched %d/%d paths, %s of %s\n", s.PathsDone, s.PathsTotal, humanBytes(uint64(s.BytesDone)), humanBytes(uint64(s.BytesTotal)))
}

func (p *syncProgress) finish() {
	if p.drawn {
		fmt.Fprint(p.a.stderr, "\r\033[K")
	}
}

func bar(pct float64, width int) string {
	full := int(pct / 100 * float64(width))
	full = max(0, min(width, full))
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", width-full) + "]"
}
