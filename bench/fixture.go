package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/trove-p2p/trove/manifest"
	"github.com/trove-p2p/trove/store"
)

// Fixture is a closure built by real Nix: Paths packages, package 0 the
// deepest (every other depends on it, directly or not), each holding a
// deterministic data file (so a rebuild with another salt changes store
// paths and references but barely any bytes) and files naming its
// dependencies.
type Fixture struct {
	Dir      string // scratch directory for blobs, expression, caches
	Top      string // the root store path
	Paths    []string
	NarBytes int64
}

// FixtureSpec sizes a fixture.
type FixtureSpec struct {
	Paths int
	Bytes int64 // total data bytes, spread unevenly over the paths
	// Salt changes package 0 (and so renames every path above it).
	Salt string
}

// blobSizes spreads total over n paths unevenly (a few big, many small),
// deterministically.
func blobSizes(n int, total int64) []int64 {
	weights := make([]int64, n)
	var sum int64
	for i := range n {
		w := int64(1 + (i*37)%11)
		if i%10 == 3 {
			w *= 6
		}
		weights[i] = w
		sum += w
	}
	sizes := make([]int64, n)
	for i, w := range weights {
		sizes[i] = total * w / sum
	}
	return sizes
}

// writeBlobs writes the data files once per directory.
func writeBlobs(dir string, sizes []int64) error {
	done := filepath.Join(dir, ".complete")
	if _, err := os.Stat(done); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, n := range sizes {
		r := rand.NewChaCha8([32]byte{byte(i), byte(i >> 8), 't', 'r', 'o', 'v', 'e'})
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("blob-%d", i)))
		if err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		for left := n; left > 0; {
			m := min(left, int64(len(buf)))
			r.Read(buf[:m])
			if _, err := f.Write(buf[:m]); err != nil {
				f.Close()
				return err
			}
			left -= m
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return os.WriteFile(done, nil, 0o644)
}

// expression is the Nix expression of the fixture: package i depends on
// i-1 and i/2, so the graph is a DAG with fan-in, rooted at the last.
func expression(blobDir string, n int, salt string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `let
  blobs = builtins.path { path = %q; name = "trove-bench-blobs"; filter = p: t: baseNameOf p != ".complete"; };
  mk = i: deps: salt: derivation {
    name = "bench-pkg-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir -p $out/lib $out/bin
      /bin/cp ${blobs}/blob-${toString i} $out/lib/data
      echo "${salt}" > $out/salt
      for d in ${toString deps}; do echo "$d" >> $out/deps; done
      echo "#!/bin/sh" > $out/bin/run
      for d in ${toString deps}; do echo "exec $d/bin/run" >> $out/bin/run; done
      /bin/chmod +x $out/bin/run
    '' ];
  };
`, blobDir)
	fmt.Fprintf(&b, "  p0 = mk 0 [ ] %q;\n", salt)
	for i := 1; i < n; i++ {
		deps := fmt.Sprintf("p%d", i-1)
		if j := i / 2; j != i-1 {
			deps += fmt.Sprintf(" p%d", j)
		}
		fmt.Fprintf(&b, "  p%d = mk %d [ %s ] \"\";\n", i, i, deps)
	}
	fmt.Fprintf(&b, "in p%d\n", n-1)
	return b.String()
}

// nixEnv isolates Nix's caches for the benchmark.
func nixEnv(dir string) []string {
	return append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(dir, "xdg-cache"), "NIX_CONFIG=experimental-features = nix-command")
}

func runCmd(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// HaveNix reports whether the real Nix tools are installed.
func HaveNix() bool {
	_, err := exec.LookPath("nix-build")
	return err == nil && store.NixUsable() == nil
}

// BuildFixture builds the fixture with nix-build, offline, in dir (blobs
// are reused across builds in the same dir). It signs the closure in the
// Nix store with key (a Nix secret key file) when key is not empty.
func BuildFixture(ctx context.Context, dir string, spec FixtureSpec, keyFile string) (*Fixture, error) {
	sizes := blobSizes(spec.Paths, spec.Bytes)
	blobDir := filepath.Join(dir, "blobs")
	if err := writeBlobs(blobDir, sizes); err != nil {
		return nil, err
	}
	expr := filepath.Join(dir, fmt.Sprintf("fixture-%s.nix", safe(spec.Salt)))
	if err := os.WriteFile(expr, []byte(expression(blobDir, spec.Paths, spec.Salt)), 0o644); err != nil {
		return nil, err
	}
	env := nixEnv(dir)
	top, err := runCmd(ctx, env, "nix-build", expr, "--no-out-link", "--option", "substituters", "", "--option", "sandbox", "false", "--quiet")
	if err != nil {
		return nil, err
	}
	if keyFile != "" {
		if _, err := runCmd(ctx, env, "nix", "store", "sign", "--key-file", keyFile, "-r", top); err != nil {
			return nil, err
		}
	}
	out, err := runCmd(ctx, env, "nix-store", "--query", "--requisites", top)
	if err != nil {
		return nil, err
	}
	f := &Fixture{Dir: dir, Top: top, Paths: strings.Fields(out)}
	sizesOut, err := runCmd(ctx, env, "nix", "path-info", "-S", top)
	if err != nil {
		return nil, err
	}
	if fields := strings.Fields(sizesOut); len(fields) == 2 {
		fmt.Sscan(fields[1], &f.NarBytes)
	}
	return f, nil
}

func safe(s string) string {
	if s == "" {
		return "base"
	}
	return strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			return r
		}
		return '_'
	}, s)
}

// MakeCache writes an uncompressed binary cache of the fixture's closure.
func MakeCache(ctx context.Context, f *Fixture, cacheDir string) error {
	_, err := runCmd(ctx, nixEnv(f.Dir), "nix", "copy", "--to", "file://"+cacheDir+"?compression=none", f.Top)
	return err
}

// NixKey writes the benchmark's Nix signing key pair in dir and returns
// the secret key file and the public key. The key is always the same (it
// signs nothing but fixtures): a fixture's paths are the same from run to
// run, and Nix keeps every signature a path gets, so a new key each run
// piled them up (69 after a day's runs), past the 64 a PathInfo carries
// on the wire, and the one trusted in a run was then cut off.
func NixKey(ctx context.Context, dir string) (secretFile, public string, err error) {
	sk, pk := filepath.Join(dir, "bench.sk"), filepath.Join(dir, "bench.pk")
	seed := sha256.Sum256([]byte("trove bench fixture key"))
	k := manifest.SecretKey{Name: "trove-bench-1", Key: ed25519.NewKeyFromSeed(seed[:])}
	if err := os.WriteFile(sk, []byte(k.String()), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(pk, []byte(k.Public().String()), 0o644); err != nil {
		return "", "", err
	}
	return sk, k.Public().String(), nil
}
