package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/trove-p2p/trove/fetch"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
)

// simSpec sizes the sim scenario.
type simSpec struct {
	Rooms   []int       // follower counts, each run as its own room after the one-follower baseline
	Closure FixtureSpec // the closure every follower syncs
	Rate    float64     // each machine's link, bytes per second each way
	Degree  int         // followers each follower is connected to (all, in a smaller room), besides the seeder
	// Cap stops a room at this multiple of the one-follower time; the
	// followers not done by then are reported as such (the figures become
	// lower bounds).
	Cap float64
}

func (e *Env) simSpec() simSpec {
	s := e.defaultSimSpec()
	if len(e.SimRooms) > 0 {
		s.Rooms = e.SimRooms
	}
	if e.SimClosureMiB > 0 {
		s.Closure.Bytes = int64(e.SimClosureMiB) << 20
	}
	if e.SimPaths > 0 {
		s.Closure.Paths = e.SimPaths
	}
	return s
}

func (e *Env) defaultSimSpec() simSpec {
	if e.Quick {
		return simSpec{Rooms: []int{4, 16}, Closure: FixtureSpec{Paths: 10, Bytes: 1 << 20, Salt: "sim"},
			Rate: 1 << 20, Degree: 8, Cap: 30}
	}
	// 30 paths as the fanout's closure, and as many chunks (about 530)
	// as 512 machines' stores hold on this machine (their trees go to
	// disk; the bench peaks at about 21 GB). The sim stands for the
	// fanout's room with its links 127 times slower, which keeps a room's
	// ratios only if the closure has as many chunks: how long the first
	// chunks take to spread, and the last, is a number of chunk times per
	// doubling of the room, and against a closure of few chunks that is
	// most of the one-follower time, where a real closure has thousands
	// (the fanout's 2,048). On 2 MiB (32 chunks) it was a quarter of it;
	// on 8 MiB (134 chunks) the room of 512 took 1.38–1.45× one
	// follower's time, on 16 MiB 1.38×, on 32 MiB 1.23–1.27×.
	return simSpec{Rooms: []int{16, 64, 256, 512}, Closure: FixtureSpec{Paths: 30, Bytes: 32 << 20, Salt: "sim"},
		Rate: 96 << 10, Degree: 16, Cap: 10}
}

// realRate is the link the sim stands for: a LAN room on 100 Mbit/s.
const realRate = mbit100 / 8

// dilation is how many times slower than a real room on 100 Mbit/s links
// the sim runs: its links are that much slower, so that hundreds of
// machines' traffic fits in this machine's CPUs.
func (s simSpec) dilation() float64 { return max(1, realRate/s.Rate) }

// stallTimeout is the fetcher's stall timeout (15 s by default) stretched
// by the dilation: what a real room would see in 15 s takes that much
// longer here.
func (s simSpec) stallTimeout() time.Duration {
	return time.Duration(float64(15*time.Second) * s.dilation())
}

// simRun is one room's outcome.
type simRun struct {
	N      int
	Done   []time.Duration // the sync time of each follower that finished, sorted
	Upload int64           // bytes the seeder's streams wrote during the run
	Chunks int64           // ... of them, on chunks streams (the rest: infos, indexes, have messages)
	CPU    float64         // share of the machine's cores busy during the run
	Wall   time.Duration   // until the last follower finished, or the room was stopped
	Setup  time.Duration   // opening the stores and starting the nodes
	// Retries counts syncs that failed and were tried again; FirstError
	// says why the first did.
	Retries    int
	FirstError string
	// Used is the share of the followers' uplinks that carried chunk
	// data in each tenth of the one-follower time since the start;
	// SeederOnce is when the seeder had sent as many chunk bytes as the
	// closure holds (0: never). Together they say where a room loses time
	// against one follower alone: starting up (a chunk reaches hundreds
	// of followers hop by hop), in the middle, or at the end.
	Used       []float64
	SeederOnce time.Duration
	// Busy is the share of the machine's cores this process used in each
	// of those tenths: a room of hundreds starting at once can take them
	// all, which a room of real machines, each with its own, would not.
	Busy []float64
}

// linkUse says how the room used its links, for the log.
func (r simRun) linkUse(one time.Duration) string {
	var b strings.Builder
	b.WriteString("followers' uplinks carried chunks for")
	for _, u := range r.Used {
		fmt.Fprintf(&b, " %.0f%%", 100*u)
	}
	b.WriteString(" of each tenth of one follower's time, with the cores busy")
	for _, c := range r.Busy {
		fmt.Fprintf(&b, " %.0f%%", 100*c)
	}
	if r.SeederOnce > 0 && one > 0 {
		fmt.Fprintf(&b, "; the seeder had sent the closure's bytes once at %.2f× that time", r.SeederOnce.Seconds()/one.Seconds())
	}
	return b.String()
}

// stopped reports whether the room was stopped before every follower was done.
func (r simRun) stopped() bool { return len(r.Done) < r.N }

// at is the time by which the followers of rank ceil(p% of N) were done,
// by nearest rank over all N followers; ok is false when fewer were done
// when the room stopped (at is then the stop, a lower bound).
func (r simRun) at(p float64) (d time.Duration, ok bool) {
	rank := max(1, int(math.Ceil(float64(r.N)*p/100)))
	if rank > len(r.Done) {
		return r.Wall, false
	}
	return r.Done[rank-1], true
}

// sim: a room far larger than this machine can host as processes. Every
// simulated machine is a real trove store (Badger, trees on a tmpfs) with
// a real p2p.Node and fetch.Fetcher, joined over go-libp2p's in-memory
// mocknet with per-machine link rates (simnet.go). One seeder holds a
// closure built without Nix in the fixture's shape; N followers sync it
// at once. The one-follower time is measured in the same run (N=1).
func runSim(e *Env) ([]Result, error) { return e.runSimSpec(e.simSpec()) }

func (e *Env) runSimSpec(spec simSpec) ([]Result, error) {
	if need, avail := spec.memoryBytes(), memAvailable(); avail > 0 && need > avail {
		return nil, fmt.Errorf("the room of %d on %s needs about %s of memory and %s is available: choose smaller rooms (--sim-rooms) or closure (--sim-closure)",
			spec.largest(), human(spec.Closure.Bytes), human(need), human(avail))
	}
	dir, cleanup, err := simScratch(e.Dir, spec.scratchBytes())
	if err != nil {
		return nil, err
	}
	defer cleanup()
	sk, err := manifest.GenerateKey("trove-sim-1")
	if err != nil {
		return nil, err
	}
	keys, err := manifest.LoadKeyring(filepath.Join(dir, "trusted-keys"))
	if err != nil {
		return nil, err
	}
	if err := keys.Add(sk.Public()); err != nil {
		return nil, err
	}
	seed, err := store.Open(filepath.Join(dir, "seeder"), store.Options{})
	if err != nil {
		return nil, err
	}
	defer seed.Close()
	top, narBytes, err := simClosure(e.Ctx, seed, filepath.Join(dir, "closure"), spec.Closure, sk)
	if err != nil {
		return nil, err
	}
	e.logf("sim: closure of %d paths, %s; links %s each way (%.0f× slower than 100 Mbit/s); rooms of 1, %v followers",
		spec.Closure.Paths, human(narBytes), rateString(spec.Rate), spec.dilation(), spec.Rooms)
	var runs []simRun
	var one, stop time.Duration // no limit, and no tenths, for the one-follower room
	for _, n := range append([]int{1}, spec.Rooms...) {
		r, err := e.simRoom(dir, spec, n, one, stop, seed, top, keys, narBytes)
		if err != nil {
			return nil, fmt.Errorf("room of %d: %w", n, err)
		}
		if n == 1 {
			if r.stopped() {
				return nil, errors.New("the one follower did not finish")
			}
			one, stop = r.Done[0], time.Duration(spec.Cap*float64(r.Done[0]))
		}
		first, _ := r.at(0)
		p50, _ := r.at(50)
		p99, _ := r.at(99)
		e.logf("sim: %d followers (set up in %.1fs): %d done in %.1fs, first %.1fs, median %.1fs, p99 %.1fs; seeder upload %.2f× the closure (chunks %.2f×); CPU %.0f%%",
			n, r.Setup.Seconds(), len(r.Done), r.Wall.Seconds(), first.Seconds(), p50.Seconds(), p99.Seconds(),
			float64(r.Upload)/float64(narBytes), float64(r.Chunks)/float64(narBytes), 100*r.CPU)
		if n > 1 {
			e.logf("sim: %d followers: %s", n, r.linkUse(one))
		}
		runs = append(runs, r)
	}
	e.simRuns, e.simNarBytes = runs, narBytes
	return simResults(spec, runs, narBytes), nil
}

// simResults are the rows: the one-follower time, then for each room the
// median, 99th percentile and last follower's time over it and the
// seeder's upload over the closure.
func simResults(spec simSpec, runs []simRun, narBytes int64) []Result {
	one := runs[0].Done[0].Seconds()
	rs := []Result{{Scenario: "sim", Unit: "s", Trove: one, Target: "(context)",
		Metric: fmt.Sprintf("one follower alone: %d paths, %s over %s links", spec.Closure.Paths, human(narBytes), rateString(spec.Rate)),
		Note: fmt.Sprintf("in-process agents on go-libp2p's mocknet, each link %.0f× slower than 100 Mbit/s; each follower connected to the seeder and %d others",
			spec.dilation(), spec.Degree)}}
	for _, r := range runs[1:] {
		var notes []string
		if r.stopped() {
			notes = append(notes, fmt.Sprintf("stopped at %.3g× the one-follower time with %d of %d followers done: a figure marked > is a lower bound",
				spec.Cap, len(r.Done), r.N))
		}
		if r.Retries > 0 {
			notes = append(notes, fmt.Sprintf("%d syncs failed and were tried again, the first: %s", r.Retries, r.FirstError))
		}
		notes = append(notes, cpuNote(r.CPU))
		room := fmt.Sprintf("%d followers: ", r.N)
		time := func(metric string, p float64, target string, limit float64) Result {
			d, ok := r.at(p)
			x := Result{Scenario: "sim", Metric: room + metric + " ÷ one follower", Unit: "s", Trove: d.Seconds(),
				Baseline: one, BaselineName: "one follower", Target: target, AtLeast: !ok}
			if limit > 0 {
				return ratioRow(x, limit, false)
			}
			x.Ratio = x.Trove / one
			return x
		}
		median := time("median done", 50, "≤ 1.3×", 1.3)
		median.Note = strings.Join(notes, "; ")
		upload := ratioRow(Result{Scenario: "sim", Metric: room + "seeder upload ÷ closure", Unit: "MB", Trove: float64(r.Upload) / 1e6,
			Baseline: float64(narBytes) / 1e6, BaselineName: "closure NAR", Target: "≤ 2×", AtLeast: r.stopped(),
			Note: fmt.Sprintf("every byte the seeder's streams wrote; chunk data alone: %.3g× the closure, the rest path infos, chunk indexes and have messages",
				float64(r.Chunks)/float64(narBytes))}, 2, false)
		if r.stopped() && upload.Met != nil && *upload.Met {
			upload.Met = nil // unknown: the room did not finish
		}
		rs = append(rs, median, time("p99 done", 99, "≤ 2×", 2), time("last done", 100, "(context)", 0), upload)
	}
	return rs
}

// rateString names a link rate to three significant digits, as
// "0.787 Mbit/s" or "1000 Mbit/s" (not "1e+03").
func rateString(bytesPerSec float64) string {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(bytesPerSec*8/1e6, 'g', 3, 64), 64)
	return strconv.FormatFloat(r, 'f', -1, 64) + " Mbit/s"
}

// largest is the most followers of any room (1: the one-follower room).
func (s simSpec) largest() int { return slices.Max(append([]int{1}, s.Rooms...)) }

// scratchBytes is about the most the sim's stores hold at once: a
// follower keeps a path's chunks in its spool until the path is
// committed, references first, beside the tree it unpacked, so near its
// end the largest room holds about twice the closure per follower.
func (s simSpec) scratchBytes() int64 {
	return 2 * int64(s.largest()) * s.Closure.Bytes
}

// memoryBytes is about the most memory the largest room takes besides
// its stores' trees: each simulated machine's Badger, node and fetcher
// (about 24 MB), and its buffers and spools in the page cache, about
// half the closure (measured: 512 machines took 14.5 GB on 8 MiB and
// 20.7 GB on 32 MiB).
func (s simSpec) memoryBytes() int64 {
	return int64(s.largest()) * (24<<20 + s.Closure.Bytes/2)
}

// simScratch is where the sim's homes go: a tmpfs when there is one with
// room for need bytes that are also at most half the memory available (a
// room holds hundreds of Badger databases that sync every write), else
// under dir, on disk. Where dir is itself a tmpfs (TMPDIR=/dev/shm) and
// need does not fit in memory so, it fails: the stores would take the
// memory the room needs, and the kernel would kill the run.
func simScratch(dir string, need int64) (string, func(), error) {
	inMemory := func(d string) (fits, tmpfs bool) {
		free, ok := tmpfsFree(d)
		return ok && need <= free && need <= memAvailable()/2, ok
	}
	parent := dir
	if fits, _ := inMemory("/dev/shm"); fits {
		parent = "/dev/shm"
	} else if fits, tmpfs := inMemory(dir); tmpfs && !fits {
		return "", nil, fmt.Errorf("the simulated stores need about %s, more than fits in memory beside the room, and %s is a tmpfs: set TMPDIR to a directory on disk, or choose smaller rooms (--sim-rooms) or closure (--sim-closure)", human(need), dir)
	}
	d, err := os.MkdirTemp(parent, "trove-sim-")
	if err != nil {
		return "", nil, err
	}
	return d, func() { removeAll(d) }, nil
}

// tmpfsFree says how many bytes are free in dir, and ok if it is a tmpfs
// this process may write to.
func tmpfsFree(dir string) (free int64, ok bool) {
	const tmpfsMagic = 0x01021994
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil || st.Type != tmpfsMagic || syscall.Access(dir, 2) != nil {
		return 0, false
	}
	return int64(st.Bavail) * st.Bsize, true
}

// memAvailable is the memory the kernel says is available (0 if it does
// not say).
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// simClosure builds the fixture's closure without Nix into s: spec.Paths
// input-addressed paths, path i referring to i-1 and i/2, each holding its
// deterministic data file (sized as the fixture's) and files naming its
// references, signed by key. It returns the root and the NAR bytes in all.
func simClosure(ctx context.Context, s *store.Store, dir string, spec FixtureSpec, key manifest.SecretKey) (nix.Path, int64, error) {
	blobs := filepath.Join(dir, "blobs")
	if err := writeBlobs(blobs, blobSizes(spec.Paths, spec.Bytes)); err != nil {
		return nix.Path{}, 0, err
	}
	var paths []nix.Path
	var total int64
	for i := range spec.Paths {
		var refs []nix.Path
		if i > 0 {
			refs = append(refs, paths[i-1])
			if j := i / 2; j != i-1 {
				refs = append(refs, paths[j])
			}
		}
		tree := filepath.Join(dir, fmt.Sprintf("tree-%d", i))
		if err := os.MkdirAll(filepath.Join(tree, "lib"), 0o755); err != nil {
			return nix.Path{}, 0, err
		}
		data, err := os.ReadFile(filepath.Join(blobs, fmt.Sprintf("blob-%d", i)))
		if err != nil {
			return nix.Path{}, 0, err
		}
		var deps strings.Builder
		for _, r := range refs {
			deps.WriteString(r.Abs(s.StoreDir()) + "\n")
		}
		for name, b := range map[string][]byte{"lib/data": data, "salt": []byte(spec.Salt + "\n"), "deps": []byte(deps.String())} {
			if err := os.WriteFile(filepath.Join(tree, name), b, 0o644); err != nil {
				return nix.Path{}, 0, err
			}
		}
		var nar bytes.Buffer
		if _, err := nix.DumpNAR(&nar, tree); err != nil {
			return nix.Path{}, 0, err
		}
		p, err := nix.MakePath(s.StoreDir(), "output:out", nix.Hash(sha256.Sum256([]byte(fmt.Sprint(spec.Salt, i)))), fmt.Sprintf("bench-pkg-%d", i))
		if err != nil {
			return nix.Path{}, 0, err
		}
		slices.SortFunc(refs, func(a, b nix.Path) int { return strings.Compare(a.String(), b.String()) })
		info := &nix.PathInfo{Path: p, NarHash: nix.Hash(sha256.Sum256(nar.Bytes())), NarSize: uint64(nar.Len()), References: refs}
		info.Sigs = []string{key.Sign(info.Fingerprint(s.StoreDir()))}
		total += int64(nar.Len())
		if _, err := s.AddNAR(ctx, info, &nar); err != nil {
			return nix.Path{}, 0, err
		}
		paths = append(paths, p)
		os.RemoveAll(tree)
	}
	return paths[len(paths)-1], total, nil
}

// simAgent is one simulated machine.
type simAgent struct {
	store *store.Store
	node  *p2p.Node
	nic   *nic
}

// simRoom runs one room: the seeder (on seed's store) and n fresh
// followers, connected as spec says, all syncing top (narBytes in all)
// at once. With one, the one-follower time, it measures how the room
// uses its links (simRun.Used).
func (e *Env) simRoom(dir string, spec simSpec, n int, one, stop time.Duration, seed *store.Store, top nix.Path, keys *manifest.Keyring, narBytes int64) (r simRun, err error) {
	setup := time.Now()
	roomDir, err := os.MkdirTemp(dir, fmt.Sprintf("room-%d-", n))
	if err != nil {
		return r, err
	}
	defer removeAll(roomDir)
	mn := mocknet.New()
	defer mn.Close()
	room := &simRoom{nics: map[peer.ID]*nic{}}
	trust := p2p.NewTrustGroup(nil) // the whole room is one group
	var agents []*simAgent
	defer func() {
		for _, a := range agents {
			a.node.Close()
			if a.store != seed {
				a.store.Close()
			}
		}
	}()
	for i := range n + 1 {
		st := seed
		if i > 0 {
			if st, err = store.Open(filepath.Join(roomDir, fmt.Sprint(i)), store.Options{Light: true}); err != nil {
				return r, err
			}
		}
		a, err := addSimAgent(e.Ctx, mn, room, trust, st, i, spec.Rate)
		if err != nil {
			if st != seed {
				st.Close()
			}
			return r, err
		}
		agents = append(agents, a)
	}
	// The seeder is connected to every follower; each follower to spec.Degree
	// others at random (a sparse random graph, as a tracker or a
	// connection manager would leave a large room).
	rng := rand.New(rand.NewPCG(uint64(n), 14))
	link := func(a, b *simAgent) error {
		if len(mn.LinksBetweenPeers(a.node.ID(), b.node.ID())) > 0 {
			return nil
		}
		if _, err := mn.LinkPeers(a.node.ID(), b.node.ID()); err != nil {
			return err
		}
		_, err := mn.ConnectPeers(a.node.ID(), b.node.ID())
		return err
	}
	for i := 1; i <= n; i++ {
		if err := link(agents[i], agents[0]); err != nil {
			return r, err
		}
		want := min(spec.Degree/2, n-1)
		if n-1 <= spec.Degree {
			want = n - 1
		}
		for picked := 0; picked < want; {
			j := 1 + rng.IntN(n)
			if j == i || len(mn.LinksBetweenPeers(agents[i].node.ID(), agents[j].node.ID())) > 0 {
				if n-1 <= spec.Degree {
					// A small room is complete: link the rest in order.
					for j = 1; j <= n; j++ {
						if j != i {
							if err := link(agents[i], agents[j]); err != nil {
								return r, err
							}
						}
					}
					break
				}
				continue
			}
			if err := link(agents[i], agents[j]); err != nil {
				return r, err
			}
			picked++
		}
	}
	// Identify runs on every new connection, and a stream waits for it:
	// let it finish before the clock starts, as a room that has been up
	// for a while would have.
	for _, a := range agents {
		ids, ok := a.node.Host().(*shapedHost).Host.(interface{ IDService() identify.IDService })
		if !ok {
			continue
		}
		for _, c := range a.node.Host().Network().Conns() {
			select {
			case <-ids.IDService().IdentifyWait(c):
			case <-e.Ctx.Done():
				return r, e.Ctx.Err()
			}
		}
	}
	r = simRun{N: n, Setup: time.Since(setup)}
	ctx, cancel := context.WithCancel(e.Ctx)
	defer cancel()
	inRoom, stopRoom := context.WithCancel(ctx)
	if stop > 0 {
		inRoom, stopRoom = context.WithTimeout(ctx, stop)
	}
	defer stopRoom()
	done := make([]time.Duration, n)
	errs := make([]error, n)
	sent0, chunks0 := agents[0].nic.sent.Load(), agents[0].nic.chunks.Load()
	cpu0 := cpuTime()
	start := time.Now()
	var wg gosync.WaitGroup
	sampling, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var sampler gosync.WaitGroup
	if one > 0 {
		sampler.Go(func() {
			r.Used, r.Busy, r.SeederOnce = sampleLinks(sampling, agents, one, start, chunks0, narBytes, spec.Rate)
		})
	}
	var failMu gosync.Mutex
	for i := 1; i <= n; i++ {
		wg.Go(func() {
			a := agents[i]
			// Uncompressed: the closure is random data, which a follower
			// stops asking compressed after its first megabyte; when it
			// still judged peer by peer, that megabyte was most of what
			// each pair of a room of hundreds sent, and 512 machines'
			// zstd on two cores made the room CPU-bound (DESIGN.md,
			// Testing).
			opts := fetch.Options{Keys: keys, StallTimeout: spec.stallTimeout(), Compress: fetch.CompressNever}
			// A follower whose sync fails tries again a second later, as
			// an agent's follower does, until the room stops.
			for {
				_, err := fetch.New(a.store, a.node, opts).Fetch(inRoom, []nix.Path{top})
				done[i-1] = time.Since(start)
				if inRoom.Err() != nil {
					if ctx.Err() == nil {
						done[i-1] = -1 // stopped with the room
					}
					return
				}
				if err == nil {
					ok, err := a.store.IsValid(top)
					if err == nil && !ok {
						err = errors.New("the root is not valid after the sync")
					}
					if err != nil {
						errs[i-1] = fmt.Errorf("follower %d: %w", i, err)
						cancel()
					}
					return
				}
				failMu.Lock()
				r.Retries++
				if r.FirstError == "" {
					r.FirstError = fmt.Sprintf("follower %d: %v", i, err)
				}
				failMu.Unlock()
				select {
				case <-inRoom.Done():
				case <-time.After(time.Second):
				}
			}
		})
	}
	wg.Wait()
	r.Wall = time.Since(start)
	stopSampling()
	sampler.Wait()
	r.Upload = agents[0].nic.sent.Load() - sent0
	r.Chunks = agents[0].nic.chunks.Load() - chunks0
	r.CPU = (cpuTime() - cpu0).Seconds() / r.Wall.Seconds() / float64(runtime.NumCPU())
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	// Interrupted, the followers' syncs ended with the run: their times
	// say nothing.
	if err := e.Ctx.Err(); err != nil {
		return r, fmt.Errorf("interrupted: %w", err)
	}
	for _, d := range done {
		if d >= 0 {
			r.Done = append(r.Done, d)
		}
	}
	slices.Sort(r.Done)
	if !r.stopped() {
		r.Wall = r.Done[len(r.Done)-1]
	}
	return r, nil
}

// sampleLinks watches a room from start until ctx ends: the share of the
// followers' uplinks (agents[1:], at rate bytes per second) that carried
// chunk data in each tenth of one, and of the cores this process kept
// busy; and when the seeder (agents[0], which had sent chunks0 chunk
// bytes at start) had sent narBytes of them.
func sampleLinks(ctx context.Context, agents []*simAgent, one time.Duration, start time.Time, chunks0, narBytes int64, rate float64) (used, busy []float64, seederOnce time.Duration) {
	sent := func() (n int64) {
		for _, a := range agents[1:] {
			n += a.nic.chunks.Load()
		}
		return n
	}
	tenth := one / 10
	tick := time.NewTicker(tenth / 20)
	defer tick.Stop()
	last, next, cpu := sent(), start.Add(tenth), cpuTime()
	for {
		select {
		case <-ctx.Done():
			return used, busy, seederOnce
		case now := <-tick.C:
			if seederOnce == 0 && agents[0].nic.chunks.Load()-chunks0 >= narBytes {
				seederOnce = now.Sub(start)
			}
			if now.Before(next) {
				continue
			}
			s, c := sent(), cpuTime()
			used = append(used, float64(s-last)/(rate*tenth.Seconds()*float64(len(agents)-1)))
			busy = append(busy, (c-cpu).Seconds()/tenth.Seconds()/float64(runtime.NumCPU()))
			last, cpu, next = s, c, next.Add(tenth)
		}
	}
}

// addSimAgent starts a node on st over a new mocknet host whose NIC runs
// at rate, in the room and its trust group.
func addSimAgent(ctx context.Context, mn mocknet.Mocknet, room *simRoom, trust *p2p.TrustGroup, st *store.Store, i int, rate float64) (*simAgent, error) {
	// The sim's links are slower than real ones; so is its time.
	scale := max(1, realRate/rate)
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/%d", i>>16&255, i>>8&255, i&255, p2p.DefaultPort))
	if err != nil {
		return nil, err
	}
	h, err := mn.AddPeer(key, addr)
	if err != nil {
		return nil, err
	}
	nc := newNIC(rate)
	room.mu.Lock()
	room.nics[h.ID()] = nc
	room.mu.Unlock()
	trust.Allow(h.ID(), fmt.Sprintf("sim-%d", i))
	node, err := p2p.New(ctx, p2p.Config{Key: key, Trust: trust, Content: p2p.StoreContent{Store: st}, TimeScale: scale,
		Host: &shapedHost{Host: h, room: room, nic: nc, paced: []protocol.ID{p2p.ProtoChunks}}})
	if err != nil {
		h.Close()
		return nil, err
	}
	return &simAgent{store: st, node: node, nic: nc}, nil
}

// cpuNote says how busy the machine's cores were during a run, and
// whether that makes its times say more about the CPU than the network.
// cpuBound is the share of the machine's cores busy beyond which a room's
// times are taken to be the cores', not the network's.
const cpuBound = 0.85

func cpuNote(busy float64) string {
	if busy > cpuBound {
		return fmt.Sprintf("CPU-bound (%.0f%% of %d cores busy): times overstate the network's", 100*busy, runtime.NumCPU())
	}
	return fmt.Sprintf("%.0f%% of %d cores busy", 100*busy, runtime.NumCPU())
}

// machineCPU is the CPU time every process on the machine has used (the
// agents of a LAN scenario are processes of their own), and the wall
// time of every core, from /proc/stat; ok is false without it.
func machineCPU() (busy, all time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, false
	}
	var t [8]int64
	for i := range t {
		t[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal, in clock ticks (100 Hz)
	tick := 10 * time.Millisecond
	idle := t[3] + t[4]
	var sum int64
	for _, v := range t {
		sum += v
	}
	return time.Duration(sum-idle) * tick, time.Duration(sum) * tick, true
}

// roomCPU is the CPU time every process on the machine used over a
// while (used), of all its cores' time meanwhile (all); both zero where
// /proc/stat cannot say.
type roomCPU struct{ used, all time.Duration }

// cpuFrom starts counting the machine's CPU; what it returns says what
// was used since.
func cpuFrom() (since func() roomCPU) {
	busy0, all0, ok := machineCPU()
	return func() roomCPU {
		busy1, all1, ok1 := machineCPU()
		if !ok || !ok1 || all1 <= all0 {
			return roomCPU{}
		}
		return roomCPU{busy1 - busy0, all1 - all0}
	}
}

// busy is the share of the cores kept busy.
func (c roomCPU) busy() float64 {
	if c.all <= 0 {
		return 0
	}
	return c.used.Seconds() / c.all.Seconds()
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
