package localapi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/trove-p2p/trove/manifest"
)

// Operations on trusted keys and signing keys.
var (
	TrustKeys   = register("trust-add", doTrustKeys)
	UntrustKeys = register("trust-remove", doUntrustKeys)
	ListKeys    = register("trust-list", doListKeys)
	GenerateKey = register("key-generate", doGenerateKey)
)

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

func doTrustKeys(ctx context.Context, e *Env, req TrustKeysRequest, _ func(Event)) (KeysResponse, error) {
	var r KeysResponse
	kr, err := e.Keys()
	if err != nil {
		return r, err
	}
	for _, s := range req.Keys {
		k, err := manifest.ParsePublicKey(s)
		if err != nil {
			return r, &UsageError{err}
		}
		if err := kr.Add(k, req.Configs...); err != nil {
			return r, &UsageError{err}
		}
		r.Names = append(r.Names, k.Name)
	}
	return r, nil
}

// UntrustKeysRequest stops trusting the keys with these names.
type UntrustKeysRequest struct {
	Names []string `json:"names"`
}

func doUntrustKeys(ctx context.Context, e *Env, req UntrustKeysRequest, _ func(Event)) (KeysResponse, error) {
	var r KeysResponse
	kr, err := e.Keys()
	if err != nil {
		return r, err
	}
	for _, name := range req.Names {
		ok, err := kr.Remove(name)
		if err != nil {
			return r, err
		}
		if !ok {
			return r, fmt.Errorf("no trusted key is named %q (see trove trust list)", name)
		}
		r.Names = append(r.Names, name)
	}
	return r, nil
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
		file = filepath.Join(manifest.KeysDir(e.Home), req.Name+".secret")
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
