package profile

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

// openUp makes dir and its parents up to the temp root traversable by
// other users (t.TempDir makes them 0700).
func openUp(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
}

// TestActivationRunsAsUser: as root, an activation runs as the named
// user, or as the owner of a profile outside the system profiles, with a
// clean environment; a system profile's runs as root.
func TestActivationRunsAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run commands as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody here")
	}
	t.Setenv("TROVE_TEST_AGENT_SECRET", "the agent's environment")
	out := t.TempDir()
	openUp(t, out)
	os.Chmod(out, 0o777)
	for _, tc := range []struct {
		name    string
		user    string
		owner   bool // the profile's directory belongs to nobody
		wantUID string
	}{
		{"named user", "nobody", false, nobody.Uid},
		{"profile's owner", "", true, nobody.Uid},
		{"this process's profile", "", false, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			s, err := store.Open(home, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			openUp(t, home)
			p := OpenProfiles(s)
			report := filepath.Join(out, strings.NewReplacer(" ", "-", "'", "").Replace(tc.name))
			root := treeWithActivation(t, s, "#!/bin/sh\n{ id -u; echo \"$HOME\"; env | grep -c TROVE_TEST_AGENT_SECRET; } > "+report+"\ntrue\n")
			if tc.owner {
				dir := filepath.Join(t.TempDir(), "alice-profiles")
				os.MkdirAll(dir, 0o755)
				openUp(t, dir)
				uid, gid := atoi(t, nobody.Uid), atoi(t, nobody.Gid)
				os.Chown(dir, uid, gid)
				if err := p.Record("home", filepath.Join(dir, "home-manager")); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Activate(context.Background(), "home", 1, root, "bin/activate", ActivateOptions{Run: true, User: tc.user}); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			f := strings.Fields(string(b))
			if len(f) != 3 || f[0] != tc.wantUID {
				t.Fatalf("the activation reported %q, want uid %s", b, tc.wantUID)
			}
			if tc.wantUID != "0" && (f[1] != nobody.HomeDir || f[2] != "0") {
				t.Errorf("as %s: HOME %q, the agent's variable seen %s times; want %q and a clean environment", tc.user, f[1], f[2], nobody.HomeDir)
			}
		})
	}
}

func atoi(t *testing.T, s string) int {
	var n int
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestActivateAtBoot: with AtBoot the profile switches at once; NixOS's
// switch-to-configuration gets "boot", any other command waits for the
// next boot and runs then, once.
func TestActivateAtBoot(t *testing.T) {
	s, p := testProfiles(t)
	log := filepath.Join(t.TempDir(), "log")
	root := treeWithActivation(t, s, "#!/bin/sh\necho \"ran $*\" >> "+log+"\n")
	boot := filepath.Join(t.TempDir(), "boot_id")
	os.WriteFile(boot, []byte("boot-1\n"), 0o644)
	defer func(f string) { bootIDFile = f }(bootIDFile)
	bootIDFile = boot
	ctx := context.Background()
	o := ActivateOptions{Run: true, Following: true, AtBoot: true}
	if err := p.Activate(ctx, "desk", 1, root, "bin/activate", o); err != nil {
		t.Fatal(err)
	}
	if cur, _ := p.Current("desk"); cur != 1 {
		t.Fatalf("after a switch at boot the profile is on %d, want 1", cur)
	}
	if _, err := os.Stat(log); err == nil {
		t.Fatal("the activation ran before the boot")
	}
	if g := p.PendingAtBoot("desk"); g != 1 {
		t.Fatalf("pending at boot: %d, want 1", g)
	}
	if g, err := p.RunAtBoot(ctx, "desk", o); g != 0 || err != nil {
		t.Fatalf("RunAtBoot before a reboot: %d, %v", g, err)
	}
	os.WriteFile(boot, []byte("boot-2\n"), 0o644) // rebooted
	if g, err := p.RunAtBoot(ctx, "desk", o); g != 1 || err != nil {
		t.Fatalf("RunAtBoot after the reboot: %d, %v", g, err)
	}
	if g, _ := p.RunAtBoot(ctx, "desk", o); g != 0 {
		t.Fatal("RunAtBoot ran twice")
	}
	if b, _ := os.ReadFile(log); strings.TrimSpace(string(b)) != "ran" {
		t.Errorf("activations: %q, want one, after the reboot", b)
	}

	// NixOS's command is run at once, with "boot".
	nixos := treeWithSwitch(t, s, "echo \"ran $*\" >> "+log)
	os.Remove(log)
	if err := p.Activate(ctx, "nixos", 1, nixos, "bin/switch-to-configuration", o); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(log); strings.TrimSpace(string(b)) != "ran boot" {
		t.Errorf("switch-to-configuration ran with %q, want boot", b)
	}
}

// treeWithSwitch adds a NixOS-like system whose
// bin/switch-to-configuration is script.
func treeWithSwitch(t *testing.T, s *store.Store, script string) nix.Path {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "system")
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "switch-to-configuration"), []byte("#!/bin/sh\n"+script+"\n"), 0o755)
	pi, err := s.AddTree(context.Background(), dir, "nixos-system")
	if err != nil {
		t.Fatal(err)
	}
	return pi.Path
}
