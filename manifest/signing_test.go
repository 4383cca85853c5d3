package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadSigningKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadSigningKey(dir, ""); err == nil || !strings.Contains(err.Error(), "trove key generate") {
		t.Fatalf("no key: %v", err)
	}
	write := func(name string) SecretKey {
		k, err := GenerateKey(name)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name+".secret"), []byte(k.String()+"\n"), 0o600)
		return k
	}
	a := write("a-1")
	if k, err := LoadSigningKey(dir, ""); err != nil || k.String() != a.String() {
		t.Fatalf("the only key: %v %v", k.Name, err)
	}
	b := write("b-1")
	if _, err := LoadSigningKey(dir, ""); err == nil || !strings.Contains(err.Error(), "2 signing keys") {
		t.Fatalf("two keys: %v", err)
	}
	if k, err := LoadSigningKey(dir, "b-1"); err != nil || k.String() != b.String() {
		t.Fatalf("by name: %v %v", k.Name, err)
	}
	if _, err := LoadSigningKey(dir, "c-1"); err == nil || !strings.Contains(err.Error(), `signing key "c-1"`) {
		t.Fatalf("missing: %v", err)
	}
}

func TestTrustedFor(t *testing.T) {
	kr, err := LoadKeyring(filepath.Join(t.TempDir(), "trusted-keys"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := GenerateKey("a-1")
	other, _ := GenerateKey("a-1") // same name, other bytes
	if kr.TrustedFor(a.Public(), "laptop") {
		t.Fatal("an unknown key is trusted")
	}
	kr.Add(a.Public(), "laptop")
	if !kr.TrustedFor(a.Public(), "laptop") || kr.TrustedFor(a.Public(), "server") {
		t.Fatal("trusted for laptop only")
	}
	if kr.TrustedFor(other.Public(), "laptop") {
		t.Fatal("a key with the same name and other bytes is trusted")
	}
	kr.Add(a.Public(), "*")
	if !kr.TrustedFor(a.Public(), "server") {
		t.Fatal("* trusts for any configuration")
	}
}
