package fetch

import (
	"fmt"
	"slices"
	"time"
)

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (f *transfer) snapshot(done bool) Progress {
	s := f.lock()
	defer f.unlockQuiet()
	used := 0
	for _, ps := range s.peers {
		if ps.bytes > 0 {
			used++
		}
	}
	return Progress{
		PathsDone: s.pathsDone, PathsTotal: len(f.pl.items),
		BytesDone: s.bytesDone, BytesTotal: s.bytesTotal, BytesFetched: s.bytesFetched,
		PeersUsed: used, Elapsed: time.Since(f.start), Done: done,
	}
}

// progressLoop reports progress five times a second until stopped; the
// returned stop is idempotent and sends a final report.
func (f *transfer) progressLoop() (stop func()) {
	if f.opts.Progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				f.opts.Progress(f.snapshot(false))
			}
		}
	}()
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		close(quit)
		<-finished
		f.opts.Progress(f.snapshot(true))
	}
}

func (f *transfer) report(r *Report) {
	s := f.lock()
	defer f.unlockQuiet()
	r.PathsFetched = s.pathsDone
	r.BytesFetched, r.BytesReused, r.BytesResumed, r.NarBytes = s.bytesFetched, s.bytesReused, s.bytesResumed, s.bytesTotal
	for _, ps := range s.peers {
		pr := PeerReport{ID: ps.id.String(), BytesFetched: ps.bytes, BadData: ps.bad, Dropped: ps.dropped}
		if !ps.first.IsZero() && ps.last.After(ps.first) {
			pr.Seconds = ps.last.Sub(ps.first).Seconds()
			pr.RateMBps = float64(ps.bytes) / 1e6 / pr.Seconds
		}
		r.Peers = append(r.Peers, pr)
	}
	slices.SortFunc(r.Peers, func(a, b PeerReport) int { return int(b.BytesFetched - a.BytesFetched) })
}
