package nixdaemon

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/nixtest"
)

// Environment of TestUntrustedAsNobody.
const (
	envSocket        = "TROVE_TEST_NIX_SOCKET"
	envRefusedSocket = "TROVE_TEST_NIX_REFUSED_SOCKET"
	envPath          = "TROVE_TEST_NIX_PATH"
)

// TestUntrusted: over the socket, a user the daemon does not trust
// (allowed-users = *, trusted-users = root) reads the store and makes
// temporary roots, but Nix 2.8 drops its dontCheckSigs: an unsigned
// input-addressed path is refused for want of a signature, a
// content-addressed one is added. A daemon whose allowed-users leaves the
// user out hangs up on it (ErrHungUp).
func TestUntrusted(t *testing.T) {
	s := newTestStoreOver(t, socket)
	ctx := context.Background()
	info, nar := sourceInfo(t, tree{"f": "root's\n"}.write(t), "roots", nil)
	if err := add(ctx, s.client(t, Options{}), info, nar, true); err != nil {
		t.Fatal(err)
	}
	refusing := nixtest.StartDaemon(t, t.TempDir(), "allowed-users = root")
	out := nixtest.RunAsNobody(t, "TestUntrustedAsNobody",
		envSocket+"="+s.socket, envRefusedSocket+"="+refusing.Socket, envPath+"="+info.Path.String())
	t.Log(out)
	c := s.client(t, Options{})
	unsigned, _, _, _ := untrustedPaths(t)
	if ok, err := c.IsValidPath(ctx, unsigned.Path); err != nil || ok {
		t.Errorf("IsValidPath(refused path) = %v, %v", ok, err)
	}
	if all, err := c.QueryAllValidPaths(ctx); err != nil || len(all) != 2 {
		t.Errorf("QueryAllValidPaths = %v, %v; want root's path and nobody's content-addressed one", all, err)
	}
	if log := refusing.Log(); !strings.Contains(log, "user 'nobody' is not allowed to connect") {
		t.Errorf("the refusing daemon's log:\n%s", log)
	}
}

// untrustedPaths are the paths nobody adds: an input-addressed one, and
// a content-addressed one.
func untrustedPaths(t testing.TB) (unsigned *nix.PathInfo, unsignedNAR string, ca *nix.PathInfo, caNAR string) {
	t.Helper()
	dir := tree{"f": "nobody's\n"}.write(t)
	ca, caNAR = sourceInfo(t, dir, "nobodys-ca", nil)
	unsigned, unsignedNAR = sourceInfo(t, dir, "nobodys", nil)
	unsigned.CA = "" // claimed input-addressed, which only a signature or trust vouches for
	return unsigned, unsignedNAR, ca, caNAR
}

// TestUntrustedAsNobody is TestUntrusted's client, run as nobody.
func TestUntrustedAsNobody(t *testing.T) {
	if !nixtest.AsNobody(t.Name()) {
		t.Skip("run as nobody by TestUntrusted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Dial(ctx, os.Getenv(envRefusedSocket), Options{}); !errors.Is(err, ErrHungUp) {
		t.Errorf("Dial to a daemon that does not allow nobody = %v; want ErrHungUp", err)
	} else {
		t.Log(err)
	}

	c, err := Dial(ctx, os.Getenv(envSocket), Options{Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roots := mustPath(t, os.Getenv(envPath))
	if pi, err := c.QueryPathInfo(ctx, roots); err != nil || pi.Path != roots {
		t.Errorf("QueryPathInfo = %v, %v", pi, err)
	}
	if err := c.NarFromPath(ctx, roots, &strings.Builder{}); err != nil {
		t.Error(err)
	}
	if err := c.AddTempRoot(ctx, roots); err != nil {
		t.Error(err)
	}

	unsigned, unsignedNAR, ca, caNAR := untrustedPaths(t)
	err = add(ctx, c, unsigned, unsignedNAR, true)
	var de *DaemonError
	if !errors.As(err, &de) || !strings.Contains(de.Msg, "lacks a valid signature") {
		t.Fatalf("AddToStoreNar(unsigned, dontCheckSigs) as nobody = %v; want the daemon's refusal for want of a signature", err)
	}
	t.Logf("refused: %v", err)
	if ok, err := c.IsValidPath(ctx, unsigned.Path); err != nil || ok {
		t.Errorf("IsValidPath(refused path) = %v, %v", ok, err)
	}
	if err := add(ctx, c, ca, caNAR, true); err != nil {
		t.Errorf("AddToStoreNar(content-addressed) as nobody: %v", err)
	}
}
