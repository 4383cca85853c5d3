package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/store"
)

// TestChunkHoldOpenPeakRSS plays clients that open every chunks stream
// they may, ask each for 4 MiB NAR ranges and never read the answers,
// against a seeder running as its own process (this test binary again),
// and measures what the seeder's peak RSS (VmHWM) gains over serving an
// honest fetch. The gain must stay within the chunks protocol's memory
// limits (limits.go): 64 MiB for one peer, 512 MiB for all. Run with -v
// to see the figures.
func TestChunkHoldOpenPeakRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts seeder processes")
	}
	if raceEnabled {
		t.Skip("measures peak RSS, which the race detector multiplies")
	}
	var perPeer, total int64
	var streams int
	for _, l := range protocolLimits {
		if l.proto == ProtoChunks {
			perPeer, total, streams = l.memoryPeer, l.memory, l.streamsPeer
		}
	}
	for _, tc := range []struct {
		name       string
		identities int
		public     bool
	}{
		{"one trusted peer", 1, false},
		{"6 identities, serving the public", 6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attackers := make([]host.Host, tc.identities)
			honestKey, _, _ := crypto.GenerateEd25519Key(nil)
			honestID, _ := peer.IDFromPrivateKey(honestKey)
			spec := seederSpec{Public: tc.public, Trust: []string{honestID.String()}, NarMiB: 8}
			for i := range attackers {
				attackers[i] = rawHost(t)
				spec.Trust = append(spec.Trust, attackers[i].ID().String())
			}
			sd := startSeeder(t, spec)
			honest, err := New(context.Background(), Config{Key: honestKey, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: NewTrustGroup(nil)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { honest.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := honest.Connect(ctx, sd.addr); err != nil {
				t.Fatal(err)
			}
			fetchAll := func() error {
				infos, err := honest.Info(ctx, sd.addr.ID, []nix.PathHash{sd.path})
				if err != nil {
					return err
				}
				var wants []ChunkWant
				for _, c := range infos[0].Index {
					wants = append(wants, ChunkWant{Chunk: c.ID, Size: c.Size})
				}
				return honest.Fetch(ctx, sd.addr.ID, wants, 16, func(int, []byte, error) error { return nil })
			}
			if err := fetchAll(); err != nil {
				t.Fatalf("honest fetch: %v", err)
			}
			_, base := sd.rss(t)

			// Every attacker opens all the chunks streams it may and asks
			// on each for 4 MiB ranges it never reads.
			var wg sync.WaitGroup
			for _, att := range attackers {
				if err := att.Connect(ctx, sd.addr); err != nil {
					t.Fatal(err)
				}
				for range streams {
					wg.Add(1)
					go func() {
						defer wg.Done()
						st, err := att.NewStream(ctx, sd.addr.ID, ProtoChunks)
						if err != nil {
							return
						}
						t.Cleanup(func() { st.Reset() })
						var b bytes.Buffer
						for i := range 8 {
							writeMsg(&b, &ChunkRequest{Seq: uint64(i), Path: sd.path[:], Offset: uint64(i%2) << 20, Length: MaxRangeLen})
						}
						st.Write(b.Bytes())
					}()
				}
			}
			wg.Wait()
			// Wait until the seeder's memory stops growing (it has read
			// ahead all it will), then take its peak.
			last, still := 0, 0
			for deadline := time.Now().Add(20 * time.Second); still < 8 && time.Now().Before(deadline); {
				time.Sleep(100 * time.Millisecond)
				rss, _ := sd.rss(t)
				if rss-last < 1<<20 && last-rss < 1<<20 {
					still++
				} else {
					still = 0
				}
				last = rss
			}
			_, peak := sd.rss(t)
			gain := int64(peak - base)
			limit := min(int64(tc.identities)*perPeer, total)
			t.Logf("%s: seeder peak RSS %d MiB after an honest fetch, %d MiB under %d×%d streams of 4 MiB ranges never read: +%d MiB (limit %d MiB)",
				tc.name, base>>20, peak>>20, tc.identities, streams, gain>>20, limit>>20)
			if gain > limit {
				t.Errorf("the seeder's peak grew by %d MiB, over the %d MiB the limits allow", gain>>20, limit>>20)
			}
			if err := fetchAll(); err != nil {
				t.Errorf("honest fetch during the attack: %v", err)
			}
		})
	}
}

const seederEnv = "TROVE_TEST_SEEDER"

// seederSpec configures the seeder process.
type seederSpec struct {
	Public bool
	Trust  []string // peer IDs
	NarMiB int
}

type seederProc struct {
	addr peer.AddrInfo
	path nix.PathHash
	in   io.Writer
	out  *bufio.Scanner
}

var seederLine = regexp.MustCompile(`^SEEDER addr=(\S+) path=([0-9a-f]+)`)

func startSeeder(t *testing.T, spec seederSpec) *seederProc {
	t.Helper()
	js, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSeederProcess$")
	cmd.Env = append(os.Environ(), seederEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	sp := &seederProc{in: in, out: bufio.NewScanner(outp)}
	for sp.out.Scan() {
		m := seederLine.FindStringSubmatch(sp.out.Text())
		if m == nil {
			continue
		}
		ai, err := peer.AddrInfoFromString(m[1])
		if err != nil {
			t.Fatal(err)
		}
		sp.addr = *ai
		h, _ := hex.DecodeString(m[2])
		copy(sp.path[:], h)
		return sp
	}
	t.Fatalf("the seeder process did not start: %v", sp.out.Err())
	return nil
}

var rssLine = regexp.MustCompile(`^SEEDER rss=(\d+) hwm=(\d+)`)

// rss returns the seeder's current and peak RSS in bytes.
func (sp *seederProc) rss(t *testing.T) (rss, hwm int) {
	t.Helper()
	fmt.Fprintln(sp.in, "rss")
	for sp.out.Scan() {
		if m := rssLine.FindStringSubmatch(sp.out.Text()); m != nil {
			r, _ := strconv.Atoi(m[1])
			h, _ := strconv.Atoi(m[2])
			return r << 10, h << 10
		}
	}
	t.Fatalf("the seeder process went away: %v", sp.out.Err())
	return 0, 0
}

// TestSeederProcess is the seeder of TestChunkHoldOpenPeakRSS: it serves
// one path of NarMiB MiB and answers "rss" on stdin with its memory.
func TestSeederProcess(t *testing.T) {
	js := os.Getenv(seederEnv)
	if js == "" {
		t.Skip("the seeder of TestChunkHoldOpenPeakRSS")
	}
	var spec seederSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pi := addTree(t, s, map[string][]byte{"data": randomBytes(spec.NarMiB<<20, 3)})
	trust := NewTrustGroup(nil)
	for _, id := range spec.Trust {
		p, err := peer.Decode(id)
		if err != nil {
			t.Fatal(err)
		}
		trust.Allow(p, "")
	}
	key, _, _ := crypto.GenerateEd25519Key(nil)
	n, err := New(context.Background(), Config{Key: key, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: trust,
		ServePublic: spec.Public, Content: StoreContent{Store: s}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	addr := ""
	for _, a := range n.Host().Addrs() {
		if strings.HasPrefix(a.String(), "/ip4/127.0.0.1/tcp/") {
			addr = a.String() + "/p2p/" + n.ID().String()
		}
	}
	fmt.Printf("SEEDER addr=%s path=%x\n", addr, pi.Path.Hash[:])
	status := regexp.MustCompile(`VmRSS:\s+(\d+) kB|VmHWM:\s+(\d+) kB`)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		b, _ := os.ReadFile("/proc/self/status")
		var rss, hwm string
		for _, m := range status.FindAllSubmatch(b, -1) {
			if len(m[1]) > 0 {
				rss = string(m[1])
			} else {
				hwm = string(m[2])
			}
		}
		fmt.Printf("SEEDER rss=%s hwm=%s\n", rss, hwm)
	}
}
