package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/p2p"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/trust"
)

// Options configure a Fetcher.
type Options struct {
	// Keys are the trusted public keys; a PathInfo signed by one is believed.
	Keys *manifest.Keyring
	// Vouched holds PathInfos already believed (from a verified manifest),
	// with their chunk index IDs; a peer's info must agree with them.
	Vouched map[nix.PathHash]*nix.PathInfo
	// NoCheckSigs believes every PathInfo a peer sends. For tests only: it
	// lets any peer make any content valid under any path name.
	NoCheckSigs bool
	// Window is the number of chunk requests in flight per peer (default
	// 16), shared by its streams.
	Window int
	// Ingest is how many paths are unpacked at once (default 2).
	Ingest int
	// StallTimeout drops a peer that sends nothing for this long while it
	// has requests outstanding (default 15s).
	StallTimeout time.Duration
	// SpoolDir holds the NARs of paths being fetched (default <home>/partial).
	SpoolDir string
	// Compress says when chunks are asked for zstd-compressed: by default
	// (CompressAuto) from peers whose link measures slower than
	// compressBelow; CompressNever and CompressAlways override.
	Compress Compress
	// Progress, if set, is called about five times a second and at the end.
	Progress func(Progress)
	Logger   *slog.Logger
}

// Compress is when a sync asks peers for compressed chunks.
type Compress uint8

const (
	CompressAuto Compress = iota
	CompressNever
	CompressAlways
)

// ParseCompress reads "auto", "never" or "always".
func ParseCompress(s string) (Compress, error) {
	switch s {
	case "auto", "":
		return CompressAuto, nil
	case "never":
		return CompressNever, nil
	case "always":
		return CompressAlways, nil
	}
	return 0, fmt.Errorf("compress %q: want auto, never or always", s)
}

func (c Compress) String() string { return [...]string{"auto", "never", "always"}[c] }

// Fetcher fetches closures into a store through a p2p node.
type Fetcher struct {
	store  *store.Store
	node   *p2p.Node
	opts   Options
	log    *slog.Logger
	belief *trust.Trust // what a peer's PathInfo must satisfy
}

// New returns a Fetcher.
func New(s *store.Store, n *p2p.Node, opts Options) *Fetcher {
	if opts.Window <= 0 {
		opts.Window = 16
	}
	if opts.Ingest <= 0 {
		opts.Ingest = 2
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 15 * time.Second
	}
	if opts.SpoolDir == "" {
		opts.SpoolDir = DefaultSpoolDir(s)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	belief := trust.New(s.StoreDir(), opts.Keys)
	belief.BelieveAll = opts.NoCheckSigs
	for _, pi := range opts.Vouched {
		belief.VouchFor(pi, "")
	}
	return &Fetcher{store: s, node: n, opts: opts, log: opts.Logger, belief: belief}
}

// Report summarises a sync.
type Report struct {
	Roots        []string     `json:"roots"`
	PathsTotal   int          `json:"pathsInClosure"`
	PathsFetched int          `json:"pathsFetched"`
	BytesFetched int64        `json:"bytesFetched"`
	BytesReused  int64        `json:"bytesReusedLocally"`
	BytesResumed int64        `json:"bytesResumed"`
	NarBytes     int64        `json:"narBytes"`
	Seconds      float64      `json:"seconds"`
	Peers        []PeerReport `json:"peers"`
}

// PeersUsed counts the peers that sent bytes.
func (r *Report) PeersUsed() int {
	n := 0
	for _, p := range r.Peers {
		if p.BytesFetched > 0 {
			n++
		}
	}
	return n
}

// PeerReport is one peer's part in a sync.
type PeerReport struct {
	ID           string  `json:"id"`
	BytesFetched int64   `json:"bytesFetched"`
	Seconds      float64 `json:"seconds"`
	RateMBps     float64 `json:"rateMBps"`
	BadData      int     `json:"badData"`
	Dropped      string  `json:"dropped,omitempty"` // why it was dropped for this sync
}

// Progress is a snapshot for a live display.
type Progress struct {
	PathsDone, PathsTotal int
	BytesDone, BytesTotal int64 // NAR bytes in place (fetched, reused or resumed)
	BytesFetched          int64
	PeersUsed             int
	Elapsed               time.Duration
	Done                  bool
}

// Fetch makes the closures of roots valid in the store.
func (fe *Fetcher) Fetch(ctx context.Context, roots []nix.Path) (*Report, error) {
	start := time.Now()
	rep := &Report{}
	for _, r := range roots {
		rep.Roots = append(rep.Roots, r.Abs(fe.store.StoreDir()))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pl, err := fe.plan(ctx, roots)
	if err != nil {
		return rep, err
	}
	rep.PathsTotal = pl.closureSize
	fe.log.Debug("planned", "missing", len(pl.items), "closure", pl.closureSize, "took", time.Since(start))
	if len(pl.items) == 0 {
		rep.Seconds = time.Since(start).Seconds()
		fe.progress(Progress{PathsTotal: 0, Done: true, Elapsed: time.Since(start)})
		return rep, nil
	}
	f := newTransfer(fe, pl, start)
	err = f.noSpace(fe, f.run(ctx, fe))
	fe.log.Debug("fetched", "took", time.Since(start), "err", err)
	f.report(rep)
	rep.Seconds = time.Since(start).Seconds()
	return rep, err
}

func (fe *Fetcher) progress(p Progress) {
	if fe.opts.Progress != nil {
		fe.opts.Progress(p)
	}
}

// item is one path to fetch.
type item struct {
	info      *nix.PathInfo
	index     chunk.Index
	offs      []uint64
	infoFrom  peer.ID // who told us info and index (blamed if the NAR is wrong)
	providers []peer.ID
	valid     bool // committed locally; changed only by the scheduler
	attempts  int  // descriptions proved wrong so far
}

type plan struct {
	items       []*item // references first
	byHash      map[nix.PathHash]*item
	closureSize int
}

// plan learns the missing part of the closures of roots from the peers.
// The first provider asked describes a root's whole closure in one answer,
// so planning costs two or three round trips whatever the graph's depth.
func (fe *Fetcher) plan(ctx context.Context, roots []nix.Path) (*plan, error) {
	pl := &plan{byHash: map[nix.PathHash]*item{}}
	described := map[nix.PathHash]described{}
	broke := map[peer.ID]bool{} // peers whose answers broke the protocol
	seen := map[nix.PathHash]bool{}
	var local []nix.Path
	var want []nix.Path
	// consider queues p, or notes it as local: a valid path's closure is valid.
	consider := func(p nix.Path) error {
		if seen[p.Hash] {
			return nil
		}
		seen[p.Hash] = true
		ok, err := fe.store.IsValid(p)
		if err != nil {
			return err
		}
		if ok {
			local = append(local, p)
		} else {
			want = append(want, p)
		}
		return nil
	}
	for _, r := range roots {
		if err := consider(r); err != nil {
			return nil, err
		}
	}
	for len(want) > 0 {
		// Everything already described joins this round, so the whole
		// closure is located with one batch of have queries.
		for i := 0; i < len(want); i++ {
			if d, ok := described[want[i].Hash]; ok {
				for _, ref := range d.ri.Info.References {
					if err := consider(ref); err != nil {
						return nil, err
					}
				}
			}
		}
		batch := want
		want = nil
		got, err := fe.learn(ctx, batch, described, broke)
		if err != nil {
			return nil, err
		}
		for _, it := range got {
			pl.byHash[it.info.Path.Hash] = it
			for _, ref := range it.info.References {
				if err := consider(ref); err != nil {
					return nil, err
				}
			}
		}
	}
	// Order references first.
	placed := map[nix.PathHash]bool{}
	var visit func(it *item)
	visit = func(it *item) {
		if placed[it.info.Path.Hash] {
			return
		}
		placed[it.info.Path.Hash] = true
		for _, ref := range it.info.References {
			if dep, ok := pl.byHash[ref.Hash]; ok {
				visit(dep)
			}
		}
		pl.items = append(pl.items, it)
	}
	for _, r := range roots {
		if it, ok := pl.byHash[r.Hash]; ok {
			visit(it)
		}
	}
	localClosure, err := fe.store.Closure(local...)
	if err != nil {
		return nil, err
	}
	pl.closureSize = len(pl.items) + len(localClosure)
	return pl, nil
}

// described is a peer's description of a path, not yet believed.
type described struct {
	ri   *p2p.RemoteInfo
	from peer.ID
}

// learn finds providers for paths and a believable PathInfo for each,
// asking for whole closures of what is not described yet.
// A peer in broke, or whose answer breaks the protocol (a decoder bomb,
// say), is added to it and not asked again: each answer may cost up to
// the cap.
func (fe *Fetcher) learn(ctx context.Context, want []nix.Path, desc map[nix.PathHash]described, broke map[peer.ID]bool) ([]*item, error) {
	hashes := make([]nix.PathHash, len(want))
	for i, p := range want {
		hashes[i] = p.Hash
	}
	providers := fe.locate(ctx, hashes)
	for i := range providers {
		providers[i] = slices.DeleteFunc(providers[i], func(q peer.ID) bool { return broke[q] })
	}
	// Ask each path's first provider for the closures of the undescribed.
	ask := map[peer.ID][]nix.PathHash{}
	for i, h := range hashes {
		if _, ok := desc[h]; !ok && len(providers[i]) > 0 {
			ask[providers[i][0]] = append(ask[providers[i][0]], h)
		}
	}
	// A request names at most p2p.MaxInfoHashes roots, and an answer
	// holds at most p2p.MaxClosureInfos infos: what is still undescribed
	// after one is asked for again, while answers bring new paths. (The
	// rest are described one by one below.)
	for p, hs := range ask {
		for len(hs) > 0 {
			ris, err := fe.node.InfoClosure(ctx, p, hs)
			if err != nil {
				fe.log.Debug("closure info failed", "peer", p, "err", err)
				var bad *p2p.BadDataError
				if errors.Is(err, p2p.ErrProtocol) || errors.As(err, &bad) {
					broke[p] = true
				}
				break
			}
			news := false
			for _, ri := range ris {
				if _, ok := desc[ri.Info.Path.Hash]; !ok {
					desc[ri.Info.Path.Hash] = described{ri: ri, from: p}
					news = true
				}
			}
			if !news {
				break
			}
			hs = slices.DeleteFunc(hs, func(h nix.PathHash) bool {
				_, ok := desc[h]
				return ok
			})
		}
	}
	var out []*item
	var problems []error
	for i, p := range want {
		provs := slices.DeleteFunc(providers[i], func(q peer.ID) bool { return broke[q] })
		if d, ok := desc[p.Hash]; ok && d.ri.Info.Path == p && slices.Contains(provs, d.from) && fe.belief.Believe(d.ri.Info) == nil {
			out = append(out, &item{
				info: d.ri.Info, index: d.ri.Index, offs: d.ri.Index.Offsets(), infoFrom: d.from,
				providers: provs,
			})
			continue
		}
		fe.log.Debug("describing a path alone: no closure answer held it", "path", p)
		it, err := fe.believe(ctx, p, provs)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		out = append(out, it)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return out, nil
}

// locateConnected asks only the connected peers which of hashes they have.
func (fe *Fetcher) locateConnected(ctx context.Context, hashes []nix.PathHash) [][]peer.ID {
	return fe.ask(ctx, fe.node.ConnectedPeers(), hashes)
}

// ask asks each of peers which of hashes it has, a bounded number at once.
//
// A peer that does not answer (busy: a seeder a room of hundreds asks at
// once) is not taken to lack anything: while some hash has no provider,
// the peers that failed are asked again, after askRetry and twice that.
func (fe *Fetcher) ask(ctx context.Context, peers []peer.ID, hashes []nix.PathHash) [][]peer.ID {
	out := make([][]peer.ID, len(hashes))
	var mu sync.Mutex
	for try := 0; ; try++ {
		var failed []peer.ID
		AskAll(ctx, peers, 0, func(ctx context.Context, p peer.ID) error {
			has, err := fe.node.Have(ctx, p, hashes)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fe.log.Debug("have query failed", "peer", p, "err", err)
				failed = append(failed, p)
				return nil
			}
			for i, h := range has {
				if h {
					out[i] = append(out[i], p)
				}
			}
			return nil
		})
		if len(failed) == 0 || try == 2 || !slices.ContainsFunc(out, func(ps []peer.ID) bool { return len(ps) == 0 }) {
			return out
		}
		select {
		case <-ctx.Done():
			return out
		case <-time.After(askRetry << try):
		}
		peers = failed
	}
}

// askRetry is how long a sync waits before asking again the peers whose
// have query failed.
var askRetry = 500 * time.Millisecond

// locate asks every connected peer which of hashes it has, and the DHT for
// those no connected peer has.
func (fe *Fetcher) locate(ctx context.Context, hashes []nix.PathHash) [][]peer.ID {
	out := fe.ask(ctx, fe.node.ConnectedPeers(), hashes)
	// Only what nobody connected has goes to the DHT: a lookup costs
	// seconds, a have query a round trip. The lookups run at once,
	// bounded, and so do the dials to what they find.
	var lookup []nix.PathHash
	for i, h := range hashes {
		if len(out[i]) == 0 {
			lookup = append(lookup, h)
		}
	}
	more := connectProviders(ctx, fe.node, lookup, p2p.PathKey)
	if len(more) > 0 {
		for i, ps := range fe.ask(ctx, more, hashes) {
			out[i] = append(out[i], ps...)
		}
	}
	for i := range out {
		slices.Sort(out[i])
		out[i] = slices.Compact(out[i])
	}
	return out
}

// providerFinder is what connectProviders needs of the network.
type providerFinder interface {
	FindProviders(ctx context.Context, key cid.Cid, max int) ([]peer.AddrInfo, error)
	Connect(ctx context.Context, p peer.AddrInfo) error
}

var _ providerFinder = (*p2p.Node)(nil)

// connectProviders asks the DHT, for each of keys at once (bounded), for
// the peers that provide it, connects to them, and returns those it
// reached, each once.
func connectProviders[K any](ctx context.Context, n providerFinder, keys []K, cidOf func(K) cid.Cid) []peer.ID {
	var mu sync.Mutex
	found := map[peer.ID]peer.AddrInfo{}
	AskAll(ctx, keys, 0, func(ctx context.Context, k K) error {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		provs, err := n.FindProviders(lctx, cidOf(k), 8)
		if err != nil {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		for _, ai := range provs {
			if _, ok := found[ai.ID]; !ok {
				found[ai.ID] = ai
			}
		}
		return nil
	})
	var reached []peer.ID
	AskAll(ctx, slices.Collect(maps.Values(found)), 0, func(ctx context.Context, ai peer.AddrInfo) error {
		if n.Connect(ctx, ai) == nil {
			mu.Lock()
			reached = append(reached, ai.ID)
			mu.Unlock()
		}
		return nil
	})
	slices.Sort(reached)
	return reached
}

// believe gets p's PathInfo and chunk index from one of its providers and
// checks that it may be trusted.
func (fe *Fetcher) believe(ctx context.Context, p nix.Path, providers []peer.ID) (*item, error) {
	where := p.Abs(fe.store.StoreDir())
	if len(providers) == 0 {
		return nil, fmt.Errorf("%s: no peer has it (asked %d connected %s); connect a peer that has it (--from ADDR) or check `trove peers`",
			where, len(fe.node.ConnectedPeers()), plural(len(fe.node.ConnectedPeers()), "peer", "peers"))
	}
	var last error
	for _, prov := range providers {
		infos, err := fe.node.Info(ctx, prov, []nix.PathHash{p.Hash})
		if err != nil {
			last = err
			continue
		}
		ri := infos[0]
		if ri == nil {
			last = fmt.Errorf("peer %s said it has %s, then had no info for it", prov, where)
			continue
		}
		if ri.Info.Path != p {
			last = fmt.Errorf("peer %s described %s as %s", prov, where, ri.Info.Path)
			continue
		}
		if err := fe.belief.Believe(ri.Info); err != nil {
			last = err
			continue
		}
		return &item{
			info: ri.Info, index: ri.Index, offs: ri.Index.Offsets(), infoFrom: prov,
			providers: providers,
		}, nil
	}
	return nil, fmt.Errorf("%s: %w", where, last)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
