package manifest

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/trove-p2p/trove/nix"
)

// PublicKey is a named Ed25519 public key, written "name:base64(32 bytes)".
type PublicKey struct {
	Name string
	Key  ed25519.PublicKey
}

func (k PublicKey) String() string { return k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key) }

// SecretKey is a named Ed25519 private key, written "name:base64(64 bytes)"
// (seed then public key), as Nix writes it.
type SecretKey struct {
	Name string
	Key  ed25519.PrivateKey
}

func (k SecretKey) String() string { return k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key) }

// Public returns the public half.
func (k SecretKey) Public() PublicKey {
	return PublicKey{Name: k.Name, Key: k.Key.Public().(ed25519.PublicKey)}
}

// Sign signs msg and returns Nix's signature form "name:base64(sig)".
func (k SecretKey) Sign(msg string) string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(ed25519.Sign(k.Key, []byte(msg)))
}

// GenerateKey makes a new key pair named name.
func GenerateKey(name string) (SecretKey, error) {
	if err := checkKeyName(name); err != nil {
		return SecretKey{}, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SecretKey{}, err
	}
	return SecretKey{Name: name, Key: priv}, nil
}

func checkKeyName(name string) error {
	if name == "" || strings.ContainsAny(name, ": \t\r\n") {
		return fmt.Errorf("key name %q: must be non-empty without ':' or spaces (e.g. laptop-1)", name)
	}
	return nil
}

func splitKey(s, what string, size int) (string, []byte, error) {
	name, b64, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return "", nil, fmt.Errorf("%s %q: want NAME:BASE64", what, s)
	}
	if err := checkKeyName(name); err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(b) != size || strings.ContainsAny(b64, "\r\n") {
		return "", nil, fmt.Errorf("%s %q: want %d bytes of base64 after the name", what, name, size)
	}
	return name, b, nil
}

// ParsePublicKey parses "name:base64" of 32 bytes.
func ParsePublicKey(s string) (PublicKey, error) {
	name, b, err := splitKey(s, "public key", ed25519.PublicKeySize)
	return PublicKey{Name: name, Key: b}, err
}

// ParseSecretKey parses "name:base64" of 64 bytes, checking that its
// public half matches its seed.
func ParseSecretKey(s string) (SecretKey, error) {
	name, b, err := splitKey(s, "secret key", ed25519.PrivateKeySize)
	if err != nil {
		return SecretKey{}, err
	}
	k := ed25519.PrivateKey(b)
	if !bytes.Equal(ed25519.NewKeyFromSeed(k.Seed()), k) {
		return SecretKey{}, fmt.Errorf("secret key %q: its public half does not match its seed", name)
	}
	return SecretKey{Name: name, Key: k}, nil
}

// Verify reports whether sig ("name:base64") is k's signature of msg.
func (k PublicKey) Verify(msg, sig string) bool {
	name, b64, ok := strings.Cut(sig, ":")
	if !ok || name != k.Name {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(k.Key, []byte(msg), b)
}

// Keyring is a set of trusted public keys, kept in a file with one
// "name:base64" per line (the format of Nix's trusted-public-keys). It is
// safe for concurrent use.
type Keyring struct {
	mu      sync.RWMutex
	file    string
	keys    []PublicKey
	configs map[string][]string // key name → configuration names it may sign ("*" = any)
	stamp   fileStamp           // of the file as last read: another process may edit it
}

type fileStamp struct {
	mod  int64
	size int64
}

func stampOf(file string) fileStamp {
	fi, err := os.Stat(file)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime().UnixNano(), fi.Size()}
}

// refresh re-reads the file if another process changed it (a running agent
// sees `trove trust add` at once). Called without mu held.
func (kr *Keyring) refresh() {
	if kr.file == "" {
		return
	}
	st := stampOf(kr.file)
	kr.mu.RLock()
	same := st == kr.stamp
	kr.mu.RUnlock()
	if same {
		return
	}
	fresh, err := LoadKeyring(kr.file)
	if err != nil {
		return // keep what we had; the next edit through trove fixes the file
	}
	kr.mu.Lock()
	kr.keys, kr.configs, kr.stamp = fresh.keys, fresh.configs, fresh.stamp
	kr.mu.Unlock()
}

// TrustedKeysPath is the keyring file of a trove home.
func TrustedKeysPath(home string) string { return filepath.Join(home, "trusted-keys") }

// LoadKeyring reads the keyring file; a missing file is an empty keyring.
func LoadKeyring(file string) (*Keyring, error) {
	kr := &Keyring{file: file, configs: map[string][]string{}, stamp: stampOf(file)}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return kr, nil
	}
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		keyStr, scope, _ := strings.Cut(s, " ")
		k, err := ParsePublicKey(keyStr)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, line, err)
		}
		if scope = strings.TrimSpace(scope); scope != "" {
			list, ok := strings.CutPrefix(scope, "configs=")
			if !ok {
				return nil, fmt.Errorf("%s:%d: after the key, only configs=NAME,... may follow", file, line)
			}
			kr.configs[k.Name] = strings.Split(list, ",")
		}
		kr.keys = append(kr.keys, k)
	}
	return kr, sc.Err()
}

// Keys returns the trusted keys.
func (kr *Keyring) Keys() []PublicKey {
	kr.refresh()
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return slices.Clone(kr.keys)
}

// Add trusts k (replacing a key of the same name) and saves the file.
// configs are the configuration names k may publish ("*" for any); with
// none, k vouches for store paths only.
func (kr *Keyring) Add(k PublicKey, configs ...string) error {
	for _, c := range configs {
		if c != "*" {
			if err := CheckName(c); err != nil {
				return err
			}
		}
	}
	kr.refresh()
	kr.mu.Lock()
	defer kr.mu.Unlock()
	kr.keys = slices.DeleteFunc(kr.keys, func(o PublicKey) bool { return o.Name == k.Name })
	kr.keys = append(kr.keys, k)
	delete(kr.configs, k.Name)
	if len(configs) > 0 {
		kr.configs[k.Name] = slices.Clone(configs)
	}
	return kr.save()
}

// Configs returns the configuration names key name may publish.
func (kr *Keyring) Configs(name string) []string {
	kr.refresh()
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return slices.Clone(kr.configs[name])
}

// Publishers returns the trusted keys that may publish configuration name.
func (kr *Keyring) Publishers(name string) []PublicKey {
	kr.refresh()
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	var out []PublicKey
	for _, k := range kr.keys {
		if slices.Contains(kr.configs[k.Name], "*") || slices.Contains(kr.configs[k.Name], name) {
			out = append(out, k)
		}
	}
	return out
}

// ErrUntrustedPublisher is wrapped when a manifest's publisher is not
// trusted for its configuration name.
var ErrUntrustedPublisher = errors.New("publisher is not trusted for this configuration")

// VerifyManifest checks that m's publisher key is trusted for m's name.
// (Decode already checked the signature against that key.)
func (kr *Keyring) VerifyManifest(m *Manifest) error {
	kr.refresh()
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	for _, k := range kr.keys {
		if k.Name != m.Publisher.Name || !bytes.Equal(k.Key, m.Publisher.Key) {
			continue
		}
		for _, c := range kr.configs[k.Name] {
			if c == "*" || c == m.Name {
				return nil
			}
		}
		return fmt.Errorf("%s: %w: key %s is trusted, but not for %q; run `trove trust add %s --config %s`", m.Name, ErrUntrustedPublisher, k.Name, m.Name, k, m.Name)
	}
	return fmt.Errorf("%s: %w: it is signed by %s, which is not a trusted key; run `trove trust add %s --config %s` if you trust it", m.Name, ErrUntrustedPublisher, m.Publisher.Name, m.Publisher, m.Name)
}

// Remove stops trusting the key named name; it reports whether there was one.
func (kr *Keyring) Remove(name string) (bool, error) {
	kr.refresh()
	kr.mu.Lock()
	defer kr.mu.Unlock()
	delete(kr.configs, name)
	n := len(kr.keys)
	kr.keys = slices.DeleteFunc(kr.keys, func(o PublicKey) bool { return o.Name == name })
	if len(kr.keys) == n {
		return false, nil
	}
	return true, kr.save()
}

func (kr *Keyring) save() error {
	var b strings.Builder
	b.WriteString("# Public keys trove trusts (NAME:BASE64, as Nix's trusted-public-keys).\n")
	for _, k := range kr.keys {
		b.WriteString(k.String())
		if c := kr.configs[k.Name]; len(c) > 0 {
			b.WriteString(" configs=" + strings.Join(c, ","))
		}
		b.WriteString("\n")
	}
	tmp := kr.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, kr.file); err != nil {
		return err
	}
	kr.stamp = stampOf(kr.file)
	return nil
}

// VerifyPathInfo reports whether one of pi's signatures is valid under a
// trusted key, over Nix's fingerprint of the path. The name of the key
// that vouched is returned.
func (kr *Keyring) VerifyPathInfo(storeDir string, pi *nix.PathInfo) (string, bool) {
	fp := pi.Fingerprint(storeDir)
	for _, k := range kr.Keys() {
		for _, sig := range pi.Sigs {
			if k.Verify(fp, sig) {
				return k.Name, true
			}
		}
	}
	return "", false
}

// TrustedFor reports whether k itself (name and key bytes) is trusted to
// publish configuration name.
func (kr *Keyring) TrustedFor(k PublicKey, name string) bool {
	return slices.ContainsFunc(kr.Publishers(name), func(t PublicKey) bool {
		return t.Name == k.Name && bytes.Equal(t.Key, k.Key)
	})
}

// KeysDir is the directory of a home's secret keys (NAME.secret).
func KeysDir(home string) string { return filepath.Join(home, "keys") }

// SigningKeys names the secret keys (NAME.secret) in dir.
func SigningKeys(dir string) []string {
	matches, _ := filepath.Glob(SigningKeyPath(dir, "*"))
	for i, m := range matches {
		matches[i] = strings.TrimSuffix(filepath.Base(m), ".secret")
	}
	return matches
}

// SigningKeyPath is the file of the secret key name in dir.
func SigningKeyPath(dir, name string) string { return filepath.Join(dir, name+".secret") }

// LoadSigningKey loads the secret key NAME.secret from dir, or with name
// "" the only secret key there.
func LoadSigningKey(dir, name string) (SecretKey, error) {
	if name == "" {
		names := SigningKeys(dir)
		switch len(names) {
		case 0:
			return SecretKey{}, errors.New("no signing key: make one with `trove key generate NAME`")
		case 1:
			name = names[0]
		default:
			return SecretKey{}, fmt.Errorf("%d signing keys in %s: choose one with --key NAME", len(names), dir)
		}
	}
	b, err := os.ReadFile(SigningKeyPath(dir, name))
	if err != nil {
		return SecretKey{}, fmt.Errorf("signing key %q: %w", name, err)
	}
	return ParseSecretKey(string(b))
}
