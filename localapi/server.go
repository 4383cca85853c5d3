package localapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"

	"github.com/trove-p2p/trove/agent"
)

// handlerFunc runs one operation on JSON.
type handlerFunc func(ctx context.Context, e *Env, req json.RawMessage, ev func(Event)) (any, error)

var registry = map[string]handlerFunc{}

// register adds o to the operations Handler serves.
func register[Req, Resp any](name string, run func(context.Context, *Env, Req, func(Event)) (Resp, error)) Op[Req, Resp] {
	o := Op[Req, Resp]{Name: name, run: run}
	registry[name] = func(ctx context.Context, e *Env, raw json.RawMessage, ev func(Event)) (any, error) {
		var req Req
		if err := json.Unmarshal(raw, &req); err != nil {
			return nil, usagef("bad %s request: %v", name, err)
		}
		return o.run(ctx, e, req, ev)
	}
	return o
}

// The operations, each served as POST /v1/<name>.
var (
	// The store.
	Init        = register("init", doInit)
	Add         = register("add", doAdd)
	ImportNix   = register("import-nix", doImportNix)
	ImportCache = register("import-cache", doImportCache)
	PathInfo    = register("path-info", doPathInfo)
	Closure     = register("closure", doClosure)
	Verify      = register("verify", doVerify)
	GC          = register("gc", doGC)
	RootAdd     = register("root-add", doRootAdd)
	RootRemove  = register("root-remove", doRootRemove)
	RootList    = register("root-list", doRootList)
	// Fetching from peers, and bundles.
	Sync         = register("sync", doSync)
	CreateBundle = register("bundle-create", doCreateBundle)
	ImportBundle = register("bundle-import", doImportBundle)
	// Configurations and profiles.
	Publish           = register("publish", doPublish)
	SetFollow         = register("follow", doSetFollow)
	Activate          = register("activate", doActivate)
	Rollback          = register("rollback", doRollback)
	Generations       = register("generations", doGenerations)
	DeleteGenerations = register("generations-delete", doDeleteGenerations)
	ShowManifest      = register("manifest-show", doShowManifest)
	ListManifests     = register("manifest-list", doListManifests)
	// Trusted keys and signing keys.
	TrustKeys   = register("trust-add", doTrustKeys)
	UntrustKeys = register("trust-remove", doUntrustKeys)
	ListKeys    = register("trust-list", doListKeys)
	GenerateKey = register("key-generate", doGenerateKey)
	// The trust group, and the agent's identity and state.
	AllowPeer  = register("peer-allow", doAllowPeer)
	RemovePeer = register("peer-remove", doRemovePeer)
	ListPeers  = register("peer-list", doListPeers)
	// The group: invitations, joining, members.
	Invite       = register("invite", doInvite)
	ListInvites  = register("invite-list", doListInvites)
	RevokeInvite = register("invite-revoke", doRevokeInvite)
	Join         = register("join", doJoin)
	ListGroup    = register("group-list", doListGroup)
	RemoveMember = register("group-remove", doRemoveMember)
	ID           = register("id", doID)
	Status       = register("status", doStatus)
	Peers        = register("peers", doPeers)
	ShowFleet    = register("fleet", doFleet)
)

// storeDirHeader carries the store dir the caller means; an agent whose
// store uses another refuses the operations that touch it.
const storeDirHeader = "Trove-Store-Dir"

// backendHeader carries the store (embedded or nix) the caller asked for
// with --store, if it did; an agent on the other one refuses.
const backendHeader = "Trove-Store"

// maxRequest bounds a request's JSON. A command line is at most a few
// MiB (the kernel's ARG_MAX), and a request may carry each path argument
// twice (made absolute, and as written), so this is well above any.
const maxRequest = 32 << 20

// logLevelHeader carries the level (slog's names: DEBUG, WARN, …) from
// which the operation's log records go back to the caller as Log events,
// as they would reach its standard error had it run there (-v is DEBUG).
const logLevelHeader = "Trove-Log-Level"

// logWriter sends each Write (one log record) as a Log event.
type logWriter func(Event)

func (w logWriter) Write(p []byte) (int, error) {
	w(Event{Log: string(p)})
	return len(p), nil
}

// API is the agent's Config.API: it serves this package's Handler.
func API(ag *agent.Agent) http.Handler { return Handler(ag, ag.Logger().With("component", "localapi")) }

// Handler serves the local API of a running agent: POST /v1/<operation>.
// Mount it with agent.Config.API.
func Handler(ag *agent.Agent, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	for name, h := range registry {
		mux.HandleFunc("POST /v1/"+name, func(w http.ResponseWriter, r *http.Request) {
			raw, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			storeDir := r.Header.Get(storeDirHeader)
			if storeDir == "" {
				storeDir = ag.Store.StoreDir()
			}
			w.Header().Set("Content-Type", "application/x-ndjson")
			var mu sync.Mutex
			enc := json.NewEncoder(w)
			send := func(f frame) {
				mu.Lock()
				defer mu.Unlock()
				enc.Encode(f)
				if fl, ok := w.(http.Flusher); ok {
					fl.Flush()
				}
			}
			oplog := log
			var level slog.Level
			if lv := r.Header.Get(logLevelHeader); lv != "" && level.UnmarshalText([]byte(lv)) == nil {
				toCaller := slog.NewTextHandler(logWriter(func(ev Event) { send(frame{Event: &ev}) }), &slog.HandlerOptions{Level: level})
				oplog = slog.New(slog.NewMultiHandler(log.Handler(), toCaller))
			}
			e := agentEnv(ag, storeDir, oplog)
			e.Kind.Backend = r.Header.Get(backendHeader)
			var resp any
			if len(raw) > maxRequest {
				// Read no further: whatever follows is not looked at.
				err = usagef("the %s request is larger than %d MiB: pass fewer arguments at a time", name, maxRequest>>20)
			} else {
				resp, err = h(r.Context(), e, raw, func(ev Event) { send(frame{Event: &ev}) })
			}
			f := frame{Final: true}
			if resp != nil {
				f.Result, _ = json.Marshal(resp)
			}
			if err != nil {
				f.Error = toError(err)
			}
			send(f)
		})
	}
	// A trove from before the local API passes its command line to
	// /v1/run and shows the fd-2 frames of the answer; tell it (and,
	// below, callers of other unknown operations) that versions differ.
	mux.HandleFunc("POST /v1/run", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		enc.Encode(struct {
			FD   int    `json:"fd"`
			Data []byte `json:"data"`
		}{2, []byte("trove: the running agent is a newer trove than this command: run the trove of the agent's version, or restart the agent with this one\n")})
		exit := 1
		enc.Encode(struct {
			Exit *int `json:"exit"`
		}{&exit})
	})
	mux.HandleFunc("POST /v1/{op}", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("unknown operation %q: this agent runs another version of trove", r.PathValue("op")), http.StatusNotFound)
	})
	return mux
}
