package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/zeebo/blake3"

	"github.com/trove-p2p/trove/testnet"
)

// The room's floor is a room of followers doing the least work trove's
// rules allow, measured on the fanout's own network namespaces and
// links: a schedule in which every link carries the closure once (the
// seeder sends each follower a different 1/N of the bytes, and each
// follower passes its part on to every other as it arrives), over libp2p's cheapest secure transport (TCP, TLS,
// yamux), each follower hashing what it receives with SHA-256 and BLAKE3
// and writing it to a file. No store, no NAR, no chunking, no requests,
// no have messages; a block is relayed before it is hashed, where trove
// serves a chunk only once verified, but a block (64 KiB) is about a
// chunk, so a hop costs both the same. The bytes are random, which
// neither compresses (a trove fetch stops asking for zstd once the
// first megabyte it had compressed does not shrink). On a machine with
// cores to spare it takes about one follower's time; where the room's
// processes share two cores, it says how much of the fanout's time the
// cores, not trove, cost. It is the least work, not always the least
// time: on 25 and 50 Mbit/s links trove's room finished before it
// (0.9–0.93× its median; DESIGN.md, Limits).
const (
	roomFloorProtoPart protocol.ID = "/trove-bench/room-floor/part/1.0.0"
	roomFloorProtoPush protocol.ID = "/trove-bench/room-floor/push/1.0.0"
	roomFloorPort                  = 4078
	roomFloorBlock                 = 64 << 10
)

// RoomFloorSpec is one machine of a room floor run (the hidden command
// `trove bench room-floor-node`).
type RoomFloorSpec struct {
	Index int      // this machine: 0 the seeder, 1..len(Addrs)-1 the followers
	Addrs []string // every machine's IPv4 address, the seeder's first
	Size  int64    // bytes each follower receives
	Start time.Time
	Dir   string // where a follower writes what it receives
}

// Args is spec as the hidden command's arguments.
func (s RoomFloorSpec) Args() []string {
	return []string{"bench", "room-floor-node", strconv.Itoa(s.Index), strings.Join(s.Addrs, ","),
		strconv.FormatInt(s.Size, 10), strconv.FormatInt(s.Start.UnixNano(), 10), s.Dir}
}

// ParseRoomFloorSpec reads the hidden command's arguments.
func ParseRoomFloorSpec(args []string) (RoomFloorSpec, error) {
	if len(args) != 5 {
		return RoomFloorSpec{}, fmt.Errorf("room-floor-node: want INDEX ADDRS SIZE START DIR, got %d arguments", len(args))
	}
	var s RoomFloorSpec
	var err error
	var start int64
	if s.Index, err = strconv.Atoi(args[0]); err != nil {
		return s, fmt.Errorf("room-floor-node: index: %w", err)
	}
	s.Addrs = strings.Split(args[1], ",")
	if s.Index < 0 || s.Index >= len(s.Addrs) || len(s.Addrs) < 2 {
		return s, fmt.Errorf("room-floor-node: index %d of %d machines", s.Index, len(s.Addrs))
	}
	for _, a := range s.Addrs {
		if ip, err := netip.ParseAddr(a); err != nil || !ip.Is4() {
			return s, fmt.Errorf("room-floor-node: %q is not an IPv4 address", a)
		}
	}
	if s.Size, err = strconv.ParseInt(args[2], 10, 64); err != nil || s.Size < int64(len(s.Addrs)-1) {
		return s, fmt.Errorf("room-floor-node: size %q", args[2])
	}
	if start, err = strconv.ParseInt(args[3], 10, 64); err != nil {
		return s, fmt.Errorf("room-floor-node: start: %w", err)
	}
	s.Start, s.Dir = time.Unix(0, start), args[4]
	return s, nil
}

// roomFloorKey is machine i's identity: every machine derives every
// other's peer ID from its index.
func roomFloorKey(i int) crypto.PrivKey {
	seed := sha256.Sum256([]byte("trove-bench room floor " + strconv.Itoa(i)))
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		panic(err) // a seed always makes a key
	}
	return k
}

// roomFloorPart is how many bytes follower i (1-based) of n is sent by
// the seeder and passes on.
func roomFloorPart(size int64, i, n int) int64 {
	p := size / int64(n)
	if i == n {
		p += size % int64(n)
	}
	return p
}

// RoomFloorNode runs one machine of a room floor run; a follower prints
// "done UNIXNANO" once it has received, hashed and written Size bytes,
// and returns once it has also passed its part on.
func RoomFloorNode(ctx context.Context, s RoomFloorSpec, out io.Writer) error {
	h, err := libp2p.New(floorHost(fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", roomFloorPort),
		libp2p.Identity(roomFloorKey(s.Index)), libp2p.DisableRelay())...)
	if err != nil {
		return err
	}
	defer h.Close()
	ids := make([]peer.ID, len(s.Addrs))
	for i, a := range s.Addrs {
		if ids[i], err = peer.IDFromPrivateKey(roomFloorKey(i)); err != nil {
			return err
		}
		addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/%s/tcp/%d", a, roomFloorPort))
		if err != nil {
			return err
		}
		h.Peerstore().AddAddr(ids[i], addr, peerstore.PermanentAddrTTL)
	}
	if s.Index == 0 {
		return roomFloorSeed(ctx, h)
	}
	return roomFloorFollow(ctx, h, s, ids, out)
}

// roomFloorSeed serves parts until ctx ends: a request is a uvarint
// length, answered with that many random bytes.
func roomFloorSeed(ctx context.Context, h host.Host) error {
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(rand.Uint32())
	}
	h.SetStreamHandler(roomFloorProtoPart, serveBytes(block))
	<-ctx.Done()
	return nil
}

// roomFloorFollow receives its part from the seeder, passing each block
// on to every other follower, and the others' parts from them.
func roomFloorFollow(ctx context.Context, h host.Host, s RoomFloorSpec, ids []peer.ID, out io.Writer) error {
	n := len(ids) - 1
	f, err := os.Create(filepath.Join(s.Dir, fmt.Sprintf("room-floor-%d", s.Index)))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	sink := newFloorSink(f, s.Size)
	h.SetStreamHandler(roomFloorProtoPush, func(st network.Stream) {
		defer st.Close()
		for {
			b := make([]byte, roomFloorBlock)
			k, err := io.ReadFull(st, b)
			if k > 0 {
				sink.q <- b[:k]
			}
			if err != nil {
				return
			}
		}
	})
	// Connected before the start, as the fanout's agents are.
	for i, id := range ids {
		for i != s.Index && h.Network().Connectedness(id) != network.Connected {
			// Past any dial backoff: a machine dialled before it
			// listened is refused, and libp2p would not dial it again
			// for seconds.
			cctx, cancel := context.WithTimeout(network.WithForceDirectDial(ctx, "room floor"), time.Second)
			err := h.Connect(cctx, peer.AddrInfo{ID: id})
			cancel()
			switch {
			case err == nil:
			case time.Now().After(s.Start):
				return fmt.Errorf("room floor: machine %d not reachable by the start: %w", i, err)
			default:
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(s.Start)):
	}
	// A relay that fails fails this machine, which ends the run: its
	// receiver would otherwise wait for the rest of this part for ever.
	var pushes []chan []byte
	var wg gosync.WaitGroup
	pushErrs := make([]error, len(ids))
	for i := 1; i < len(ids); i++ {
		if i == s.Index {
			continue
		}
		st, err := h.NewStream(ctx, ids[i], roomFloorProtoPush)
		if err != nil {
			return err
		}
		q := make(chan []byte, 64)
		pushes = append(pushes, q)
		wg.Go(func() {
			var err error
			for b := range q {
				if err == nil {
					_, err = st.Write(b)
				}
			}
			// Done once the receiver has read it all and closed its side:
			// bytes written may still be queued here, and leaving now
			// would lose them. (A reset while waiting is the receiver
			// gone with all it needed: it judges what it got.)
			if err == nil {
				st.CloseWrite()
				io.Copy(io.Discard, st)
			}
			if err != nil {
				pushErrs[i] = fmt.Errorf("room floor: relaying to machine %d: %w", i, err)
			}
			st.Close()
		})
	}
	st, err := h.NewStream(ctx, ids[0], roomFloorProtoPart)
	if err != nil {
		return err
	}
	part := roomFloorPart(s.Size, s.Index, n)
	if _, err := st.Write(binary.AppendUvarint(nil, uint64(part))); err != nil {
		return err
	}
	for got := int64(0); got < part; {
		b := make([]byte, min(roomFloorBlock, part-got))
		k, err := io.ReadFull(st, b)
		got += int64(k)
		if k > 0 {
			for _, q := range pushes {
				q <- b[:k]
			}
			sink.q <- b[:k]
		}
		if err != nil && got < part {
			return fmt.Errorf("room floor: part from the seeder: %d of %d bytes: %w", got, part, err)
		}
	}
	st.Close()
	for _, q := range pushes {
		close(q)
	}
	wg.Wait()
	if err := errors.Join(pushErrs...); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case at := <-sink.full:
		fmt.Fprintf(out, "done %d\n", at.UnixNano())
	case err := <-sink.failed:
		return err
	}
	return nil
}

// floorSink hashes (SHA-256 and BLAKE3) and writes to a file every block
// a follower receives, in one goroutine, as a sync must do once each; full
// says when size bytes are in.
type floorSink struct {
	q      chan []byte
	full   chan time.Time
	failed chan error
}

func newFloorSink(f *os.File, size int64) *floorSink {
	s := &floorSink{q: make(chan []byte, 256), full: make(chan time.Time, 1), failed: make(chan error, 1)}
	go func() {
		sha, b3 := sha256.New(), blake3.New()
		var got int64
		for b := range s.q {
			sha.Write(b)
			b3.Write(b)
			if _, err := f.Write(b); err != nil {
				s.failed <- err
				for range s.q {
				}
				return
			}
			if got += int64(len(b)); got >= size && got-int64(len(b)) < size {
				s.full <- time.Now()
			}
		}
	}()
	return s
}

// roomFloor runs the room's floor with followers on lan (machines 0 to
// followers) and returns when each follower was done, sorted, and the
// CPU the machine used from the start until the last was. One machine
// failing ends the run.
func (e *Env) roomFloor(lan *testnet.LAN, followers int, size int64) (done []time.Duration, cpu roomCPU, err error) {
	const most = 10 * time.Minute
	ctx, cancel := context.WithTimeout(e.Ctx, most)
	defer cancel()
	addrs := make([]string, followers+1)
	for i := range addrs {
		addrs[i] = lan.IP(i)
	}
	start := time.Now().Add(5 * time.Second)
	node := func(i int) (*exec.Cmd, *strings.Builder) {
		cmd := lan.Command(ctx, i, e.Trove, RoomFloorSpec{Index: i, Addrs: addrs, Size: size, Start: start, Dir: lan.Home(i)}.Args()...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		return cmd, &stderr
	}
	seed, seedErr := node(0)
	if err := seed.Start(); err != nil {
		return nil, roomCPU{}, err
	}
	seedDone := make(chan error, 1)
	go func() {
		err := seed.Wait()
		if ctx.Err() == nil {
			cancel() // the seeder gave up: no follower can finish
		}
		seedDone <- err
	}()
	var wg gosync.WaitGroup
	ends := make([]time.Time, followers)
	errs := make([]error, followers)
	for i := 1; i <= followers; i++ {
		wg.Go(func() {
			cmd, stderr := node(i)
			b, err := cmd.Output()
			if err != nil {
				if ctx.Err() == nil {
					errs[i-1] = fmt.Errorf("room floor, follower %d: %v: %s", i, err, strings.TrimSpace(stderr.String()))
					cancel() // the others would wait for its part
				}
				return
			}
			var ns int64
			if _, err := fmt.Sscanf(string(b), "done %d", &ns); err != nil {
				errs[i-1] = fmt.Errorf("room floor, follower %d: %q: %v", i, b, err)
				cancel()
				return
			}
			ends[i-1] = time.Unix(0, ns)
		})
	}
	time.Sleep(time.Until(start))
	cpuSince := cpuFrom()
	wg.Wait()
	cpu = cpuSince()
	failed := ctx.Err()
	cancel()
	if werr := <-seedDone; failed != nil && werr != nil {
		errs = append(errs, fmt.Errorf("room floor, seeder: %v: %s", werr, strings.TrimSpace(seedErr.String())))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, roomCPU{}, err
	}
	if failed != nil {
		if errors.Is(failed, context.DeadlineExceeded) {
			return nil, roomCPU{}, fmt.Errorf("room floor: not done in %v", most)
		}
		return nil, roomCPU{}, failed
	}
	for _, t := range ends {
		done = append(done, t.Sub(start))
	}
	slices.Sort(done)
	return done, cpu, nil
}

// roomFloorRows measures the room's floor for size bytes with one
// follower and with followers, and compares it with trove's one follower
// alone (one) and room (its median, and the CPU it used).
func (e *Env) roomFloorRows(lan *testnet.LAN, followers int, size int64, one, median time.Duration, cpu roomCPU) ([]Result, error) {
	alone, _, err := e.roomFloor(lan, 1, size)
	if err != nil {
		return nil, err
	}
	done, fcpu, err := e.roomFloor(lan, followers, size)
	if err != nil {
		return nil, err
	}
	r := simRun{N: followers, Done: done}
	fmedian, _ := r.at(50)
	e.logf("fanout: room floor: one follower alone %.1fs; %d followers: median %.1fs, last %.1fs, %.0f%% of the cores busy, %.1f core-seconds",
		alone[0].Seconds(), followers, fmedian.Seconds(), done[len(done)-1].Seconds(), 100*fcpu.busy(), fcpu.used.Seconds())
	room := fmt.Sprintf("%d followers: ", followers)
	floorRow := func(metric string, d time.Duration) Result {
		return Result{Scenario: "fanout", Metric: "room floor, " + room + metric + " ÷ one follower", Unit: "s", Trove: d.Seconds(),
			Baseline: one.Seconds(), BaselineName: "one follower alone", Ratio: d.Seconds() / one.Seconds(), Target: "(context)"}
	}
	mrow := floorRow("median done", fmedian)
	mrow.Note = fmt.Sprintf("the least work on these links: each follower relays its 1/%d of the bytes to every other at once, over TLS, hashed, to a file; one follower alone %.1f s; %s",
		followers, alone[0].Seconds(), cpuNote(fcpu.busy()))
	rows := []Result{
		mrow,
		floorRow("last done", done[len(done)-1]),
		{Scenario: "fanout", Metric: room + "median done ÷ the room floor's", Unit: "s", Trove: median.Seconds(),
			Baseline: fmedian.Seconds(), BaselineName: "room floor", Ratio: median.Seconds() / fmedian.Seconds(), Target: "(context)"},
	}
	if cpu.used > 0 && fcpu.used > 0 {
		// Both rooms move the same bytes, so this is CPU per byte: where
		// the room shares the cores, what its times come to.
		rows = append(rows, Result{Scenario: "fanout", Metric: room + "CPU ÷ the room floor's", Unit: "core-s",
			Trove: cpu.used.Seconds(), Baseline: fcpu.used.Seconds(), BaselineName: "room floor",
			Ratio: cpu.used.Seconds() / fcpu.used.Seconds(), Target: "(context)",
			Note: "every process on the machine, from the room's start to its last follower done"})
	}
	return rows, nil
}
