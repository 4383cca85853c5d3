package localapi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/trove-p2p/trove/agent"
	"github.com/trove-p2p/trove/group"
	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/p2p"
)

// PeerRequest names a peer of the trust group.
type PeerRequest struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// PeerResponse names the peer changed, as peer IDs are written.
type PeerResponse struct {
	ID string `json:"id"`
}

// editTrust changes the trust group: the agent's when one runs (so it
// takes effect at once and reaches the members), else the file's (the
// members hear of it when the agent next connects to them).
func editTrust(e *Env, inAgent func(*agent.Agent) error, inFile func(*agent.Members, crypto.PrivKey) error) error {
	if ag := e.agent; ag != nil {
		return inAgent(ag)
	}
	m, key, err := e.members()
	if err != nil {
		return err
	}
	if err := inFile(m, key); err != nil {
		return err
	}
	return m.Save(e.Home)
}

func doAllowPeer(ctx context.Context, e *Env, req PeerRequest, _ func(Event)) (PeerResponse, error) {
	id, err := peer.Decode(req.ID)
	if err != nil {
		return PeerResponse{}, usagef("%q is not a peer ID (run `trove id` on the other machine): %v", req.ID, err)
	}
	if err := group.CheckName(req.Name); err != nil {
		return PeerResponse{}, &UsageError{err}
	}
	return PeerResponse{ID: id.String()}, editTrust(e,
		func(ag *agent.Agent) error { return ag.Allow(id, req.Name) },
		func(m *agent.Members, key crypto.PrivKey) error {
			return agent.ChangeMembers(m, key, id, req.Name, false)
		})
}

func doRemovePeer(ctx context.Context, e *Env, req PeerRequest, _ func(Event)) (PeerResponse, error) {
	id, err := peer.Decode(req.ID)
	if err != nil {
		return PeerResponse{}, usagef("%q is not a peer ID: %v", req.ID, err)
	}
	var was bool
	err = editTrust(e,
		func(ag *agent.Agent) (err error) { was, err = ag.Remove(id); return err },
		func(m *agent.Members, key crypto.PrivKey) error {
			_, was = m.Trust()[id]
			if !was {
				return nil
			}
			return agent.ChangeMembers(m, key, id, "", true)
		})
	if err == nil && !was {
		err = fmt.Errorf("%s is not in the trust group (see trove peer list)", id)
	}
	return PeerResponse{ID: id.String()}, err
}

// ListPeersRequest lists the trust group.
type ListPeersRequest struct{}

// TrustedPeer is a member of the trust group.
type TrustedPeer struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// ListPeersResponse lists the trust group by name, then ID.
type ListPeersResponse struct {
	Peers []TrustedPeer `json:"peers"`
}

func doListPeers(ctx context.Context, e *Env, _ ListPeersRequest, _ func(Event)) (ListPeersResponse, error) {
	r := ListPeersResponse{Peers: []TrustedPeer{}}
	var g *p2p.TrustGroup
	if ag := e.agent; ag != nil {
		g = ag.Trust
	} else {
		var err error
		if g, err = agent.LoadTrust(e.Home); err != nil {
			return r, err
		}
	}
	for id, n := range g.Peers() {
		r.Peers = append(r.Peers, TrustedPeer{id.String(), n})
	}
	slices.SortFunc(r.Peers, func(a, b TrustedPeer) int {
		return strings.Compare(a.Name+"\x00"+a.ID, b.Name+"\x00"+b.ID)
	})
	return r, nil
}

// IDRequest asks for this machine's peer ID and addresses.
type IDRequest struct{}

// IDResponse is this machine's peer ID and its addresses: a running
// agent's live ones, else those it will listen on.
type IDResponse struct {
	ID      string   `json:"id"`
	Addrs   []string `json:"addrs"`
	Running bool     `json:"agentRunning"`
}

func doID(ctx context.Context, e *Env, _ IDRequest, _ func(Event)) (IDResponse, error) {
	if ag := e.agent; ag != nil {
		st, err := ag.Status(ctx)
		if err != nil {
			return IDResponse{}, err
		}
		return IDResponse{ID: st.PeerID, Addrs: st.Addrs, Running: true}, nil
	}
	key, err := p2p.LoadOrCreateKey(filepath.Join(e.Home, "keys"))
	if err != nil {
		return IDResponse{}, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return IDResponse{}, err
	}
	set, err := fileSettings(e.Home)
	if err != nil {
		return IDResponse{}, err
	}
	r := IDResponse{ID: id.String()}
	for _, l := range set.Listen {
		r.Addrs = append(r.Addrs, l+"/p2p/"+id.String())
	}
	return r, nil
}

// StatusRequest asks a running agent for its status.
type StatusRequest struct{}

// doStatus needs a running agent; without one it says so, and opens
// nothing (a command must never stand in the way of an agent starting).
func doStatus(ctx context.Context, e *Env, _ StatusRequest, _ func(Event)) (*agent.Status, error) {
	ag := e.agent
	if ag == nil {
		return nil, &Error{Kind: KindNotRunning, Message: agent.NotRunning(e.Home).Error()}
	}
	return ag.Status(ctx)
}

// PeersRequest asks a running agent for its peers.
type PeersRequest struct{}

func doPeers(ctx context.Context, e *Env, _ PeersRequest, _ func(Event)) ([]p2p.PeerStatus, error) {
	ag := e.agent
	if ag == nil {
		return nil, &Error{Kind: KindNotRunning, Message: agent.NotRunning(e.Home).Error()}
	}
	ps := ag.Node.Peers()
	if ps == nil {
		ps = []p2p.PeerStatus{}
	}
	return ps, nil
}

// FleetRequest asks a running agent for the fleet view of Name.
type FleetRequest struct {
	Name string `json:"name"`
}

func doFleet(ctx context.Context, e *Env, req FleetRequest, _ func(Event)) (agent.Fleet, error) {
	if err := manifest.CheckName(req.Name); err != nil {
		return agent.Fleet{}, &UsageError{err}
	}
	ag := e.agent
	if ag == nil {
		return agent.Fleet{}, &Error{Kind: KindNotRunning, Message: agent.NotRunning(e.Home).Error()}
	}
	return ag.Fleet(req.Name), nil
}

// TrustKeysRequest trusts public keys (NAME:BASE64), and with Configs
// also to publish those configurations ("*" for any).
type TrustKeysRequest struct {
	Keys    []string `json:"keys"`
	Configs []string `json:"configs,omitempty"`
}

// KeysResponse names the keys changed, in order; on an error, those
// changed before it.
type KeysResponse struct {
	Names []string `json:"names"`
}

// editKeys changes the trusted keys, once for each item.
func editKeys(e *Env, items []string, fn func(*manifest.Keyring, string) (string, error)) (KeysResponse, error) {
	kr, err := e.Keys()
	if err != nil {
		return KeysResponse{}, err
	}
	names, err := each(items, func(it string) (string, error) { return fn(kr, it) })
	return KeysResponse{Names: names}, err
}

func doTrustKeys(ctx context.Context, e *Env, req TrustKeysRequest, _ func(Event)) (KeysResponse, error) {
	return editKeys(e, req.Keys, func(kr *manifest.Keyring, s string) (string, error) {
		k, err := manifest.ParsePublicKey(s)
		if err == nil {
			err = kr.Add(k, req.Configs...)
		}
		if err != nil {
			return "", &UsageError{err}
		}
		return k.Name, nil
	})
}

// UntrustKeysRequest stops trusting the keys with these names.
type UntrustKeysRequest struct {
	Names []string `json:"names"`
}

func doUntrustKeys(ctx context.Context, e *Env, req UntrustKeysRequest, _ func(Event)) (KeysResponse, error) {
	return editKeys(e, req.Names, func(kr *manifest.Keyring, name string) (string, error) {
		ok, err := kr.Remove(name)
		if err == nil && !ok {
			err = fmt.Errorf("no trusted key is named %q (see trove trust list)", name)
		}
		return name, err
	})
}

// ListKeysRequest lists the trusted keys.
type ListKeysRequest struct{}

// TrustedKey is a trusted public key and the configurations it may publish.
type TrustedKey struct {
	Key     string   `json:"key"`
	Configs []string `json:"configs,omitempty"`
}

// ListKeysResponse lists the trusted keys.
type ListKeysResponse struct {
	Keys []TrustedKey `json:"keys"`
}

func doListKeys(ctx context.Context, e *Env, _ ListKeysRequest, _ func(Event)) (ListKeysResponse, error) {
	r := ListKeysResponse{Keys: []TrustedKey{}}
	kr, err := e.Keys()
	if err != nil {
		return r, err
	}
	for _, k := range kr.Keys() {
		r.Keys = append(r.Keys, TrustedKey{Key: k.String(), Configs: kr.Configs(k.Name)})
	}
	return r, nil
}

// GenerateKeyRequest makes a signing key pair NAME, its secret half
// written (mode 0600, never over an existing file) to File (absolute), or
// by default to the home's keys directory.
type GenerateKeyRequest struct {
	Name string `json:"name"`
	File string `json:"file,omitempty"`
}

// GenerateKeyResponse is the public key and where the secret key went.
type GenerateKeyResponse struct {
	Public string `json:"public"`
	File   string `json:"file"`
}

func doGenerateKey(ctx context.Context, e *Env, req GenerateKeyRequest, _ func(Event)) (GenerateKeyResponse, error) {
	sk, err := manifest.GenerateKey(req.Name)
	if err != nil {
		return GenerateKeyResponse{}, &UsageError{err}
	}
	file := req.File
	if file == "" {
		file = manifest.SigningKeyPath(manifest.KeysDir(e.Home), req.Name)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return GenerateKeyResponse{}, err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return GenerateKeyResponse{}, fmt.Errorf("writing the secret key: %w (it is never overwritten; remove it first or pass --out)", err)
	}
	_, err = fmt.Fprintln(f, sk.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return GenerateKeyResponse{}, err
	}
	return GenerateKeyResponse{Public: sk.Public().String(), File: file}, nil
}
