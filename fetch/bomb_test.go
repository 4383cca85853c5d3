package fetch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/profile"
	"github.com/trove-p2p/trove/store"
)

// The tests in this file measure the peak RSS (VmHWM) of a victim process
// that resolves and syncs a configuration while malicious peers answer
// with decoder bombs: CBOR within the wire caps that decodes to many
// times its size. The victim runs as a child process (this test binary
// again) so that its memory is its own; the seeder and the bombers run
// here.

const victimEnv = "TROVE_TEST_VICTIM"

// victimSpec tells the victim process whom to ask for what.
type victimSpec struct {
	Peers []string // multiaddrs with /p2p/
	Name  string
	Key   string // the publisher's public key, trusted for Name
}

// cborHead is the head of a CBOR item of major type major, argument n.
func cborHead(major byte, n int) []byte {
	return []byte{major<<5 | 26, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

func emptyStrings(n int) []byte {
	return append(cborHead(4, n), bytes.Repeat([]byte{0x60}, n)...)
}

// manifestBomb is a ManifestResponse of at most size bytes holding a
// signed-manifest envelope whose body lists paths of 4096 empty
// references each (within every per-array cap).
func manifestBomb(size int) []byte {
	const refs = 4096
	one := append([]byte{0xa1, 0x04}, emptyStrings(refs)...)
	paths := (size - 64) / len(one)
	body := append([]byte{0xa1, 0x09}, cborHead(4, paths)...)
	body = append(body, bytes.Repeat(one, paths)...)
	env := append(append([]byte{0xa2, 0x01}, cborHead(2, len(body))...), body...)
	env = append(env, 0x02, 0x60)
	return append(append([]byte{0xa1, 0x01}, cborHead(2, len(env))...), env...)
}

// infoBomb is an InfoResponse of infos entries of refs empty references
// and as many empty signatures: 34 MB at 4096 × 4096.
func infoBomb(infos, refs int) []byte {
	one := append(append([]byte{0xa2, 0x04}, emptyStrings(refs)...), 0x06)
	one = append(one, emptyStrings(refs)...)
	return append(append([]byte{0xa1, 0x01}, cborHead(4, infos)...), bytes.Repeat(one, infos)...)
}

func frame(b []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }

// bomber starts a raw libp2p host that answers manifest requests with
// manifestAnswer and, if infoAnswer is set, claims to hold every path and
// answers info requests with infoAnswer.
func bomber(t *testing.T, manifestAnswer, infoAnswer []byte) host.Host {
	t.Helper()
	key, _, _ := crypto.GenerateEd25519Key(nil)
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport), libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport), libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	read := func(st network.Stream, v any) error {
		r := bufio.NewReader(st)
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		return cbor.Unmarshal(b, v)
	}
	answer := func(b []byte) network.StreamHandler {
		f := frame(b)
		return func(st network.Stream) {
			defer st.Close()
			var req p2p.ManifestRequest
			read(st, &req)
			st.Write(f)
		}
	}
	h.SetStreamHandler(p2p.ProtoManifest, answer(manifestAnswer))
	if infoAnswer != nil {
		h.SetStreamHandler(p2p.ProtoInfo, answer(infoAnswer))
		h.SetStreamHandler(p2p.ProtoHave, func(st network.Stream) {
			defer st.Close()
			var req p2p.HaveRequest
			if read(st, &req) != nil {
				st.Reset()
				return
			}
			b, _ := cbor.Marshal(&p2p.HaveResponse{Bitmap: bytes.Repeat([]byte{0xff}, (len(req.Hashes)+7)/8)})
			st.Write(frame(b))
		})
	}
	return h
}

func addrOf(t *testing.T, id peer.ID, addrs []ma.Multiaddr) string {
	t.Helper()
	for _, a := range addrs {
		if strings.HasPrefix(a.String(), "/ip4/127.0.0.1/tcp/") {
			return a.String() + "/p2p/" + id.String()
		}
	}
	t.Fatalf("no loopback address in %v", addrs)
	return ""
}

// TestBombVictimPeakRSS: a victim facing decoder bombs peaks at no more
// than the RSS of a normal sync of the same closure plus what the
// protocol's caps let the bombers make it read (each bomb, from every
// bomber at once) and 16 MiB: a bomb costs its wire bytes, never what it
// would decode to. (It was twice the normal sync's RSS; once a normal
// sync stopped allocating a megabyte of buffers per path it unpacks, its
// 74 MiB became 49, and three 15 MiB manifest bombs at once, read whole
// before they can be checked, came to just over twice.) Run with -v to
// see the figures.
func TestBombVictimPeakRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts victim processes")
	}
	if raceEnabled {
		t.Skip("measures peak RSS, which the race detector multiplies")
	}
	sk, _ := manifest.GenerateKey("big-1")
	seed := newPeer(t, nil)
	paths := closure(t, seed.store, sk, 16, 2<<20, 11)
	kr, err := manifest.LoadKeyring(manifest.TrustedKeysPath(seed.home))
	if err != nil {
		t.Fatal(err)
	}
	kr.Add(sk.Public(), "big")
	hist := manifest.OpenHistory(seed.home, kr)
	if _, _, err := profile.Publish(seed.store, hist, sk, "big", paths[len(paths)-1].Path, profile.Commands{}); err != nil {
		t.Fatal(err)
	}
	// The seeder serves everyone (the victim's identity is its own).
	skey, _, _ := crypto.GenerateEd25519Key(nil)
	srv, err := p2p.New(context.Background(), p2p.Config{Key: skey, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: p2p.NewTrustGroup(nil),
		ServePublic: true, Content: p2p.StoreContent{Store: seed.store}, Manifests: manifestBytes{hist}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	seedAddr := addrOf(t, srv.ID(), srv.Host().Addrs())

	mbomb := manifestBomb(min(p2p.MaxManifestBytes, manifest.MaxManifestSize))
	ibomb := infoBomb(4096, 4096)
	bombers := func(n int, m, i []byte) []string {
		out := []string{seedAddr}
		for range n {
			h := bomber(t, m, i)
			out = append(out, addrOf(t, h.ID(), h.Addrs()))
		}
		return out
	}
	noManifest := []byte{0xa0}
	var normal int
	for _, sc := range []struct {
		name  string
		peers []string
		wire  int // bytes the bombers send in all
	}{
		{"normal sync", []string{seedAddr}, 0},
		{fmt.Sprintf("manifest bomb (%d MiB)", len(mbomb)>>20), bombers(1, mbomb, nil), len(mbomb)},
		{fmt.Sprintf("3 manifest bombers (%d MiB each)", len(mbomb)>>20), bombers(3, mbomb, nil), 3 * len(mbomb)},
		{fmt.Sprintf("info closure bomb (%d MiB)", len(ibomb)>>20), bombers(1, noManifest, ibomb), len(ibomb)},
	} {
		hwm := runVictim(t, victimSpec{Peers: sc.peers, Name: "big", Key: sk.Public().String()})
		t.Logf("%-34s victim peak RSS %4d MiB", sc.name, hwm>>20)
		if normal == 0 {
			normal = hwm
			continue
		}
		if limit := normal + sc.wire + 16<<20; hwm > limit {
			t.Errorf("%s: victim peaked at %d MiB, over the %d MiB of a normal sync plus the %d MiB the bombers sent plus 16",
				sc.name, hwm>>20, normal>>20, sc.wire>>20)
		}
	}
}

var hwmLine = regexp.MustCompile(`VICTIM vmhwm=(\d+) err=(.*)`)

// runVictim runs the victim process and returns its peak RSS in bytes.
func runVictim(t *testing.T, spec victimSpec) int {
	t.Helper()
	js, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^TestVictimProcess$", "-test.v")
	cmd.Env = append(os.Environ(), victimEnv+"="+string(js))
	out, err := cmd.CombinedOutput()
	m := hwmLine.FindSubmatch(out)
	if m == nil {
		t.Fatalf("the victim process failed (%v):\n%s", err, out)
	}
	if string(m[2]) != "<nil>" {
		t.Fatalf("the victim did not sync: %s", m[2])
	}
	kb, _ := strconv.Atoi(string(m[1]))
	return kb << 10
}

// TestVictimProcess is the victim: run by TestBombVictimPeakRSS only.
func TestVictimProcess(t *testing.T) {
	js := os.Getenv(victimEnv)
	if js == "" {
		t.Skip("the victim of TestBombVictimPeakRSS")
	}
	var spec victimSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		t.Fatal(err)
	}
	err := victim(t, spec)
	st, _ := os.ReadFile("/proc/self/status")
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(st)
	if m == nil {
		t.Fatal("no VmHWM in /proc/self/status")
	}
	fmt.Printf("VICTIM vmhwm=%s err=%v\n", m[1], err)
}

func victim(t *testing.T, spec victimSpec) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	s, err := store.Open(home, store.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	kr, err := manifest.LoadKeyring(filepath.Join(home, "trusted-keys"))
	if err != nil {
		return err
	}
	pub, err := manifest.ParsePublicKey(spec.Key)
	if err != nil {
		return err
	}
	kr.Add(pub, spec.Name)
	h := manifest.OpenHistory(home, kr)
	key, _, _ := crypto.GenerateEd25519Key(nil)
	n, err := p2p.New(ctx, p2p.Config{Key: key, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Trust: p2p.NewTrustGroup(nil)})
	if err != nil {
		return err
	}
	defer n.Close()
	for _, a := range spec.Peers {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil {
			return err
		}
		if err := n.Connect(ctx, *ai); err != nil {
			return err
		}
	}
	m, err := ResolveManifest(ctx, n, h, spec.Name, 0)
	if err != nil {
		return err
	}
	fe := New(s, n, Options{Keys: kr})
	_, err = fe.FetchManifest(ctx, m)
	return err
}
