package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// TestSimQuick runs the sim scenario at --quick size (rooms of 4 and 16
// followers: real stores, nodes and fetchers over mocknet) and checks that
// every room finished and every row has its figure; with TROVE_BENCH_FULL
// set it runs the full size (minutes).
func TestSimQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs simulated rooms; skipped with -short")
	}
	e := &Env{Ctx: context.Background(), Dir: t.TempDir(), Quick: os.Getenv("TROVE_BENCH_FULL") == "", Log: testLog{t}}
	rs, err := runSim(e)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	(&Table{Results: rs}).Print(&b)
	t.Logf("\n%s", b.String())
	if want := 1 + 4*len(e.simSpec().Rooms); len(rs) != want {
		t.Fatalf("%d rows, want %d", len(rs), want)
	}
	for _, r := range rs {
		if r.Trove <= 0 || r.Skipped != "" {
			t.Errorf("no figure: %+v", r)
		}
	}
	for _, r := range e.simRuns {
		if e.Quick && r.stopped() {
			t.Errorf("room of %d stopped with %d done", r.N, len(r.Done))
		}
		if r.Upload < e.simNarBytes && r.N > 0 {
			t.Errorf("room of %d: the seeder sent %d bytes of a %d-byte closure", r.N, r.Upload, e.simNarBytes)
		}
		if r.N == 1 {
			continue
		}
		// The room is measured by tenths of the one-follower time until
		// it is done, and never uses more than its links carry (a little
		// over, for where a tenth's bytes were counted).
		one := e.simRuns[0].Done[0]
		if want := int(r.Wall / (one / 10)); len(r.Used) < want-1 || len(r.Used) > want+1 {
			t.Errorf("room of %d: %d tenths measured in %v (one follower: %v)", r.N, len(r.Used), r.Wall, one)
		}
		var sum float64
		for _, u := range r.Used {
			if u < 0 || u > 1.2 {
				t.Errorf("room of %d: links used %.2f of a tenth", r.N, u)
			}
			sum += u
		}
		if len(r.Busy) != len(r.Used) {
			t.Errorf("room of %d: cores measured in %d tenths, links in %d", r.N, len(r.Busy), len(r.Used))
		}
		if sum == 0 {
			t.Errorf("room of %d: no link use measured: %v", r.N, r.Used)
		}
		if r.SeederOnce <= 0 || r.SeederOnce > r.Wall {
			t.Errorf("room of %d: the seeder sent the closure once at %v, the room took %v", r.N, r.SeederOnce, r.Wall)
		}
	}
	dir := t.TempDir()
	if err := e.writePlots(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"sim.svg", "sim-completion.svg"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || !strings.Contains(string(b), "</svg>") {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestSimInterrupted: a run interrupted while its last room syncs (here
// the one-follower room alone) fails, rather than reporting the followers as done
// when their syncs were cancelled (a room of 64 stopped after 12 s
// reported its median at 0.14× one follower's time, the target met).
func TestSimInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("runs simulated rooms; skipped with -short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Env{Ctx: ctx, Dir: t.TempDir(), Quick: true, Log: testLog{t}}
	spec := e.simSpec()
	spec.Rooms = nil // the one-follower room is the last
	spec.Rate /= 4   // and takes seconds
	time.AfterFunc(time.Second, cancel)
	rs, err := e.runSimSpec(spec)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted: %d rows, error %v; want the run to fail as canceled", len(rs), err)
	}
}

// A NIC's pacer serialises what is queued at its rate, first come first
// served, and an idle link starts at once.
func TestPacer(t *testing.T) {
	p := pacer{rate: 1000} // bytes per second
	now := time.Unix(0, 0)
	if got := p.reserve(now, 500); !got.Equal(now.Add(500 * time.Millisecond)) {
		t.Fatalf("first: %v", got.Sub(now))
	}
	if got := p.reserve(now, 1000); !got.Equal(now.Add(1500 * time.Millisecond)) {
		t.Fatalf("queued behind the first: %v", got.Sub(now))
	}
	later := now.Add(10 * time.Second)
	if got := p.reserve(later, 100); !got.Equal(later.Add(100 * time.Millisecond)) {
		t.Fatalf("after idling: %v", got.Sub(later))
	}
}

// Percentiles are by nearest rank over every follower, and a rank not
// reached when the room stopped is the stop, a lower bound.
func TestSimRunPercentiles(t *testing.T) {
	s := time.Second
	r := simRun{N: 4, Done: []time.Duration{1 * s, 2 * s, 3 * s, 4 * s}, Wall: 4 * s}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 2 * s}, {99, 4 * s}, {100, 4 * s}, {1, 1 * s}} {
		if got, ok := r.at(c.p); got != c.want || !ok {
			t.Errorf("p%v = %v, %v; want %v", c.p, got, ok, c.want)
		}
	}
	stopped := simRun{N: 4, Done: []time.Duration{1 * s}, Wall: 10 * s}
	if got, ok := stopped.at(50); ok || got != 10*s {
		t.Errorf("p50 of a stopped room = %v, %v; want the stop, not reached", got, ok)
	}
}

// handOff is a stream whose Write hands the bytes to the reader at once
// and returns only when released, as an in-memory stream may.
type handOff struct {
	network.Stream
	read    chan []byte
	release chan struct{}
}

func (h *handOff) Write(p []byte) (int, error) {
	h.read <- slices.Clone(p)
	<-h.release
	return len(p), nil
}

// A byte the receiver has read is counted as sent: a room is measured as
// soon as its followers are done, which may be before the seeder's Write
// returns.
func TestShapedStreamCountsBeforeHandingOver(t *testing.T) {
	for _, paced := range []bool{false, true} {
		from := newNIC(1 << 30)
		h := &handOff{read: make(chan []byte), release: make(chan struct{})}
		s := &shapedStream{Stream: h, from: from}
		if paced {
			s.to = newNIC(1 << 30)
		}
		done := make(chan error)
		go func() {
			_, err := s.Write(make([]byte, 1000))
			done <- err
		}()
		n := len(<-h.read)
		sent, chunks := from.sent.Load(), from.chunks.Load()
		close(h.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		wantChunks := int64(0)
		if paced {
			wantChunks = int64(n)
		}
		if sent != int64(n) || chunks != wantChunks {
			t.Errorf("paced %v: the receiver had read %d bytes while the sender counted %d sent, %d of chunks", paced, n, sent, chunks)
		}
		if got := from.sent.Load(); got != 1000 {
			t.Errorf("paced %v: %d bytes counted after the write, want 1000", paced, got)
		}
	}
}

// The sim's rooms, closure size and paths can be chosen (trove bench sim
// --sim-rooms --sim-closure --sim-paths), within bounds, and only what is
// chosen changes.
func TestSimSpecChosen(t *testing.T) {
	def := (&Env{}).simSpec()
	got := (&Env{SimRooms: []int{256}, SimClosureMiB: 16}).simSpec()
	if !slices.Equal(got.Rooms, []int{256}) || got.Closure.Bytes != 16<<20 {
		t.Errorf("chose rooms [256] and 16 MiB, got %v and %d bytes", got.Rooms, got.Closure.Bytes)
	}
	if got.Closure.Paths != def.Closure.Paths || got.Rate != def.Rate || got.Degree != def.Degree || got.Cap != def.Cap {
		t.Errorf("choosing rooms and size changed the rest: %+v, default %+v", got, def)
	}
	if got := (&Env{SimPaths: 6000}).simSpec(); got.Closure.Paths != 6000 || got.Closure.Bytes != def.Closure.Bytes || !slices.Equal(got.Rooms, def.Rooms) {
		t.Errorf("chose 6000 paths, got %+v", got)
	}
	for _, o := range []Options{{SimRooms: []int{0}}, {SimRooms: []int{16, maxSimRoom + 1}}, {SimClosureMiB: -1}, {SimClosureMiB: maxSimClosureMiB + 1},
		{SimPaths: -1}, {SimPaths: maxSimPaths + 1}} {
		o.Names = []string{"sim"}
		if _, err := Run(t.Context(), o); err == nil {
			t.Errorf("Run accepted rooms %v, %d MiB and %d paths", o.SimRooms, o.SimClosureMiB, o.SimPaths)
		}
	}
}

// TestSimScratch: the sim's stores go on the tmpfs when they fit in it and
// in half the memory available, and on disk under the bench's directory
// when they do not (a room of 512 on 16 MiB wrote more than this
// machine's memory to /dev/shm and was killed); where the bench's
// directory is a tmpfs too (TMPDIR=/dev/shm: a room of 512 on 32 MiB was
// killed so), stores that do not fit are refused.
func TestSimScratch(t *testing.T) {
	dir := t.TempDir()
	if _, ok := tmpfsFree(dir); ok {
		t.Skip("the test's TMPDIR is a tmpfs: there is no disk to fall back on")
	}
	for _, tc := range []struct {
		name   string
		need   int64
		onDisk bool
	}{
		{"small", 1 << 20, false},
		{"more than memory", 1 << 50, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, cleanup, err := simScratch(dir, tc.need)
			if err != nil {
				t.Fatal(err)
			}
			defer cleanup()
			want := dir
			if _, ok := tmpfsFree("/dev/shm"); ok && !tc.onDisk {
				if memAvailable() < 1<<30 {
					t.Skip("under 1 GiB of memory available: either place is right")
				}
				want = "/dev/shm"
			}
			if got := filepath.Dir(d); got != want {
				t.Errorf("%d bytes went to %s, want under %s", tc.need, d, want)
			}
			if _, err := os.Stat(d); err != nil {
				t.Error(err)
			}
			cleanup()
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("%s still there after cleanup: %v", d, err)
			}
		})
	}
	t.Run("on a tmpfs, more than memory", func(t *testing.T) {
		if _, ok := tmpfsFree("/dev/shm"); !ok {
			t.Skip("no writable tmpfs at /dev/shm")
		}
		mem, err := os.MkdirTemp("/dev/shm", "trove-sim-test-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(mem)
		d, cleanup, err := simScratch(mem, 1<<50)
		if err == nil {
			cleanup()
			t.Fatalf("stores of 1 PiB went to %s, under a tmpfs", d)
		}
		if !strings.Contains(err.Error(), "set TMPDIR to a directory on disk") {
			t.Errorf("the refusal does not say what to do: %v", err)
		}
		if left, _ := os.ReadDir(mem); len(left) != 0 {
			t.Errorf("a refused scratch left %d entries behind", len(left))
		}
	})
}

// TestSimMemory: the estimate covers what rooms of 512 took (14.5 GB on
// 8 MiB, 20.7 GB on 32 MiB), and a room that does not fit is refused
// before anything runs.
func TestSimMemory(t *testing.T) {
	for _, c := range []struct {
		mib  int64
		took float64
	}{{8, 14.5e9}, {32, 20.7e9}} {
		s := simSpec{Rooms: []int{16, 512}, Closure: FixtureSpec{Bytes: c.mib << 20}}
		if got := float64(s.memoryBytes()); got < 0.95*c.took || got > 1.3*c.took {
			t.Errorf("512 on %d MiB: estimate %.3g bytes, took %.3g", c.mib, got, c.took)
		}
	}
	e := &Env{Ctx: t.Context(), Dir: t.TempDir(), Log: testLog{t}}
	_, err := e.runSimSpec(simSpec{Rooms: []int{1 << 20}, Closure: FixtureSpec{Paths: 2, Bytes: 1 << 30}})
	if err == nil || !strings.Contains(err.Error(), "needs about") {
		t.Errorf("a room beyond the memory: %v", err)
	}
}
