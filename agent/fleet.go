package agent

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/p2p"
)

// The fleet view (p2p/fleet.go carries it): every agent tells its group,
// per configuration it follows, where it stands; every agent keeps what
// the members told it, so `trove fleet NAME` on any member, the publisher
// included, lists the machines following NAME. A status goes out within
// fleetTick of a change (a new phase, generation, activation or failure)
// and every fleetHeartbeat regardless; a machine not heard from for
// fleetStale is marked stale.

// Tunables; tests may shorten them.
var (
	fleetTick      = time.Second
	fleetHeartbeat = 15 * time.Second
	fleetStale     = time.Minute
)

// Bounds on what an agent keeps of others' statuses: members are trusted,
// but a member's bugs must not grow another's memory without limit, nor
// crowd out the others. Only names known here (followed, or with a
// manifest in the history) are kept at all.
const (
	maxFleetNames        = 256
	maxFleetMachines     = 4096 // per name
	maxFleetNamesPerPeer = 64
)

type fleetEntry struct {
	st   p2p.FleetStatus
	seen time.Time
}

// fleetBook is what this agent heard, by name then machine.
type fleetBook struct {
	mu sync.Mutex
	m  map[string]map[peer.ID]fleetEntry
}

func (b *fleetBook) put(p peer.ID, st p2p.FleetStatus, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]map[peer.ID]fleetEntry{}
	}
	byPeer := b.m[st.Name]
	old, known := byPeer[p]
	switch {
	case known && old.st.Sent > st.Sent:
		return // an older status that arrived late (gossip and direct)
	case !known && (len(byPeer) >= maxFleetMachines || b.names(p) >= maxFleetNamesPerPeer):
		return
	case byPeer == nil && len(b.m) >= maxFleetNames:
		return
	case byPeer == nil:
		byPeer = map[peer.ID]fleetEntry{}
		b.m[st.Name] = byPeer
	}
	byPeer[p] = fleetEntry{st, now}
}

// names counts the names p has a status under; the caller holds mu.
func (b *fleetBook) names(p peer.ID) int {
	n := 0
	for _, byPeer := range b.m {
		if _, ok := byPeer[p]; ok {
			n++
		}
	}
	return n
}

// forget drops what machine p said (it left the group).
func (b *fleetBook) forget(p peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, byPeer := range b.m {
		delete(byPeer, p)
	}
}

func (b *fleetBook) get(name string) map[peer.ID]fleetEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[peer.ID]fleetEntry{}
	for p, e := range b.m[name] {
		out[p] = e
	}
	return out
}

// fleetStatuses are this agent's own statuses, one per followed
// configuration.
func (a *Agent) fleetStatuses() []p2p.FleetStatus {
	fs, err := a.FollowStatuses()
	if err != nil {
		return nil
	}
	out := make([]p2p.FleetStatus, 0, len(fs))
	for _, f := range fs {
		st := p2p.FleetStatus{Name: f.Name, Current: f.Current, Newest: f.Newest, Phase: f.Phase, HeldBack: f.HeldBack, Pending: f.Pending}
		if la := f.LastActivation; la != nil {
			st.LastGen, st.LastResult = la.Generation, la.Result
			if !la.Finished.IsZero() {
				st.LastAt = la.Finished.UnixMilli()
			}
			st.LastError = truncate(la.Error, 200)
		}
		for _, fl := range f.Failed {
			st.Failed = append(st.Failed, fl.Generation)
		}
		if len(st.Failed) > p2p.MaxFleetFailed {
			st.Failed = st.Failed[len(st.Failed)-p2p.MaxFleetFailed:]
		}
		out = append(out, st)
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// fleetLoop tells the group this agent's statuses when they change, and
// every fleetHeartbeat.
func (a *Agent) fleetLoop(ctx context.Context) {
	defer a.wg.Done()
	sent := map[string]p2p.FleetStatus{}
	sentAt := map[string]time.Time{}
	t := time.NewTicker(fleetTick)
	defer t.Stop()
	for {
		now := time.Now()
		for _, st := range a.fleetStatuses() {
			if reflect.DeepEqual(sent[st.Name], st) && now.Sub(sentAt[st.Name]) < fleetHeartbeat {
				continue
			}
			sent[st.Name], sentAt[st.Name] = st, now
			msg := st
			msg.Sent = now.UnixMilli()
			a.fleet.put(a.Node.ID(), msg, now)
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := a.Node.TellFleet(tctx, msg); err != nil && ctx.Err() == nil {
				a.log.Debug("telling the group where this machine stands", "config", st.Name, "err", err)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// FleetMachine is one machine following a configuration, as it last said.
type FleetMachine struct {
	ID         string    `json:"id"`
	Name       string    `json:"name,omitempty"` // the member's name here
	Self       bool      `json:"self,omitempty"`
	Current    uint64    `json:"current"`
	Newest     uint64    `json:"newestKnown"`
	Phase      string    `json:"phase"`
	HeldBack   bool      `json:"heldBack,omitempty"`
	Pending    string    `json:"pending,omitempty"`
	LastGen    uint64    `json:"lastGeneration,omitempty"`
	LastResult string    `json:"lastResult,omitempty"`
	LastAt     time.Time `json:"lastAt,omitzero"`
	LastError  string    `json:"lastError,omitempty"`
	Failed     []uint64  `json:"failed,omitempty"`
	LastSeen   time.Time `json:"lastSeen"`
	Stale      bool      `json:"stale,omitempty"` // not heard from for a while
}

// FleetGeneration counts the machines for one generation.
type FleetGeneration struct {
	Generation uint64 `json:"generation"`
	Running    int    `json:"running"`
	Failed     int    `json:"failed"`
	NotYet     int    `json:"notYet"` // on an older one, and it did not fail there
}

// Fleet is the view of one configuration across the group.
type Fleet struct {
	Name        string            `json:"name"`
	Newest      uint64            `json:"newestKnown"` // here
	Machines    []FleetMachine    `json:"machines"`
	Generations []FleetGeneration `json:"generations"`
}

// Fleet lists every machine following name, as each last said.
func (a *Agent) Fleet(name string) Fleet {
	now := time.Now()
	f := Fleet{Name: name, Newest: a.newestKnown(name), Machines: []FleetMachine{}, Generations: []FleetGeneration{}}
	for p, e := range a.fleet.get(name) {
		if p != a.Node.ID() && !a.Trust.Contains(p) {
			continue // removed from the group since
		}
		st := e.st
		m := FleetMachine{ID: p.String(), Name: a.Trust.Name(p), Self: p == a.Node.ID(), Current: st.Current, Newest: st.Newest,
			Phase: st.Phase, HeldBack: st.HeldBack, Pending: st.Pending, LastGen: st.LastGen, LastResult: st.LastResult,
			LastError: st.LastError, Failed: st.Failed, LastSeen: e.seen, Stale: now.Sub(e.seen) > fleetStale}
		if st.LastAt > 0 {
			m.LastAt = time.UnixMilli(st.LastAt)
		}
		f.Newest = max(f.Newest, st.Newest)
		f.Machines = append(f.Machines, m)
	}
	sort.Slice(f.Machines, func(i, j int) bool {
		if f.Machines[i].Name != f.Machines[j].Name {
			return f.Machines[i].Name < f.Machines[j].Name
		}
		return f.Machines[i].ID < f.Machines[j].ID
	})
	gens := map[uint64]bool{}
	if f.Newest > 0 {
		gens[f.Newest] = true
	}
	for _, m := range f.Machines {
		if m.Current > 0 {
			gens[m.Current] = true
		}
		for _, g := range m.Failed {
			gens[g] = true
		}
	}
	for g := range gens {
		fg := FleetGeneration{Generation: g}
		for _, m := range f.Machines {
			switch {
			case m.Current == g:
				fg.Running++
			case slices.Contains(m.Failed, g):
				fg.Failed++
			case m.Current < g:
				fg.NotYet++
			}
		}
		f.Generations = append(f.Generations, fg)
	}
	sort.Slice(f.Generations, func(i, j int) bool { return f.Generations[i].Generation > f.Generations[j].Generation })
	return f
}

// startFleet listens to the group's statuses and starts telling ours.
func (a *Agent) startFleet(ctx context.Context) error {
	if err := a.Node.OnFleet(ctx, func(from peer.ID, st p2p.FleetStatus) {
		if _, followed := a.follow(st.Name); followed || a.newestKnown(st.Name) > 0 {
			a.fleet.put(from, st, time.Now())
		}
	}); err != nil {
		return fmt.Errorf("joining the fleet view: %w", err)
	}
	a.wg.Add(1)
	go a.fleetLoop(ctx)
	return nil
}
