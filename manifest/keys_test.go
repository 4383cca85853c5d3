package manifest

import (
	"path/filepath"
	"testing"

	"github.com/trove-p2p/trove/nix"
)

// Vectors from docs/reference/nix.md §2, verified against Nix 2.8.
const (
	vecPK = "test-cache-1:x3kdt34NgfK5lwae4wX9xqxJmcAL9K4u7ftLAO74+e0="
	vecSK = "test-cache-1:UZpw4GpXL4LnKUympCggd0LtISTPTExicJPmQAe2ejPHeR23fg2B8rmXBp7jBf3GrEmZwAv0ri7t+0sA7vj57Q=="
)

func TestNixSignatureVectors(t *testing.T) {
	sk, err := ParseSecretKey(vecSK)
	if err != nil {
		t.Fatal(err)
	}
	if sk.Public().String() != vecPK {
		t.Fatalf("public key %s, want %s", sk.Public(), vecPK)
	}
	for _, tc := range []struct{ fp, sig string }{
		{"1;/nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf;sha256:01q6czwzsqwpkfp82cm87f8vkqxnmz3biw0g4rydm63hpi3ifppg;128;",
			"test-cache-1:tJKQdVEZOuNLm/A04k/tGW1VyJtZTi7Q0Ff1zVP7SVmveUYASCpPsVhPtwsQzh0wzPkfUN4u9ZxyoeMafCKZAA=="},
		{"1;/nix/store/f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid;sha256:099j28b2w2wgh1vyzxfz381qjg4lyz1af9h0nxy3kgcgw1k8kkgl;184;/nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf",
			"test-cache-1:QaQd7LdrNwh27qfqiVv/zPdTtuK4W6EAo57wFwwJzPKMZo+4g5YUxs0dWfd3BfZiRzFsH8SQnpB4vCay4IyFCA=="},
	} {
		if got := sk.Sign(tc.fp); got != tc.sig {
			t.Errorf("Sign(%q) = %s, want %s", tc.fp, got, tc.sig)
		}
		pk, _ := ParsePublicKey(vecPK)
		if !pk.Verify(tc.fp, tc.sig) || pk.Verify(tc.fp+"x", tc.sig) {
			t.Errorf("Verify disagrees for %q", tc.fp)
		}
	}
}

func TestParseKeyErrors(t *testing.T) {
	for _, s := range []string{"", "nokey", ":AAAA", "name:not-base64!", "name:" + "AAAA", "na me:x3kdt34NgfK5lwae4wX9xqxJmcAL9K4u7ftLAO74+e0="} {
		if _, err := ParsePublicKey(s); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", s)
		}
	}
	if _, err := ParseSecretKey(vecPK); err == nil {
		t.Error("a public key parsed as a secret key")
	}
}

func TestKeyringVerifiesPathInfo(t *testing.T) {
	kr, err := LoadKeyring(filepath.Join(t.TempDir(), "trusted-keys"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := nix.ParseBase("hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf")
	h, _ := nix.ParseHash("sha256:01q6czwzsqwpkfp82cm87f8vkqxnmz3biw0g4rydm63hpi3ifppg")
	pi := &nix.PathInfo{Path: leaf, NarHash: h, NarSize: 128,
		Sigs: []string{"test-cache-1:tJKQdVEZOuNLm/A04k/tGW1VyJtZTi7Q0Ff1zVP7SVmveUYASCpPsVhPtwsQzh0wzPkfUN4u9ZxyoeMafCKZAA=="}}
	if _, ok := kr.VerifyPathInfo(nix.DefaultStoreDir, pi); ok {
		t.Fatal("verified with an empty keyring")
	}
	pk, _ := ParsePublicKey(vecPK)
	if err := kr.Add(pk); err != nil {
		t.Fatal(err)
	}
	if name, ok := kr.VerifyPathInfo(nix.DefaultStoreDir, pi); !ok || name != "test-cache-1" {
		t.Fatal("did not verify with the trusted key")
	}
	pi.NarSize = 129
	if _, ok := kr.VerifyPathInfo(nix.DefaultStoreDir, pi); ok {
		t.Fatal("verified a tampered path info")
	}
	again, err := LoadKeyring(kr.file)
	if err != nil || len(again.Keys()) != 1 {
		t.Fatalf("reloaded keyring: %v %v", again, err)
	}
}

func FuzzParsePublicKey(f *testing.F) {
	f.Add(vecPK)
	f.Add(vecSK)
	f.Add("a:b")
	f.Fuzz(func(t *testing.T, s string) {
		if k, err := ParsePublicKey(s); err == nil {
			if back, err := ParsePublicKey(k.String()); err != nil || back.String() != k.String() {
				t.Fatalf("round trip of %q failed", s)
			}
		}
		ParseSecretKey(s)
	})
}
