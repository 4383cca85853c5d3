package profile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
)

// threeGenerations adds three trees to s, to switch between.
// switchTo activates generation gen (root) of laptop, running nothing.
func switchTo(t *testing.T, p *Profiles, gen uint64, root nix.Path) {
	t.Helper()
	if err := p.Activate(context.Background(), "laptop", gen, root, "", ActivateOptions{}); err != nil {
		t.Fatalf("activating generation %d: %v", gen, err)
	}
}

func threeGenerations(t *testing.T, s *store.Store) []nix.Path {
	two := twoGenerations(t, s)
	third := treeWithActivation(t, s, "#!/bin/sh\n")
	return []nix.Path{two[0], two[1], third}
}

// TestSwitchRecordsHighest: every switch records the profile's highest
// generation, so the hold never rests on the links (which users delete).
func TestSwitchRecordsHighest(t *testing.T) {
	s, p := testProfiles(t)
	roots := threeGenerations(t, s)
	for i, r := range roots {
		if err := p.Activate(context.Background(), "laptop", uint64(i+1), r, "", ActivateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(p.highestFile("laptop")); err != nil {
		t.Fatalf("after activating 1, 2, 3: %v", err)
	}
}

// TestRollbackHoldsAfterDelete: roll back from a bad generation and delete
// it (trove generations delete laptop 3): the profile stays held, so no
// follower fetches and activates it again.
func TestRollbackHoldsAfterDelete(t *testing.T) {
	s, p := testProfiles(t)
	roots := threeGenerations(t, s)
	ctx := context.Background()
	for i, r := range roots {
		if err := p.Activate(ctx, "laptop", uint64(i+1), r, "", ActivateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	switchTo(t, p, 2, roots[1])                   // trove rollback laptop
	if err := p.Delete("laptop", 3); err != nil { // trove generations delete laptop 3
		t.Fatal(err)
	}
	requireHeldBack(t, p, "after rollback to 2 and deleting 3 (a follower re-activates 3)", true, 2, 3)
}

// TestRollbackHoldsAfterLostRecord: a kill -9 after a switch up but before
// its record is written loses nothing: Highest counts the current
// generation, and the next switch (a rollback) records it before moving.
func TestRollbackHoldsAfterLostRecord(t *testing.T) {
	s, p := testProfiles(t)
	roots := twoGenerations(t, s)
	switchTo(t, p, 1, roots[0])
	if err := p.Resume("laptop"); err != nil { // trove follow laptop --activate: .highest = 1
		t.Fatal(err)
	}
	// Switch to 2, and the process dies between the rename of NAME and
	// writeHighest: emulate by restoring the record Switch wrote.
	switchTo(t, p, 2, roots[1])
	if err := p.writeHighest("laptop", 1); err != nil {
		t.Fatal(err)
	}
	if h, _ := p.Highest("laptop"); h != 2 {
		t.Fatalf("highest right after the crash: %d", h)
	}
	switchTo(t, p, 1, roots[0]) // trove rollback laptop
	requireHeldBack(t, p, "crash, then rollback (the follower re-activates 2)", true, 1, 2)
}

// TestActivationRunsWhenRecordFails: a record that cannot be written after
// a switch up (disk full) does not stop the activation command: Highest
// counts the current generation anyway.
func TestActivationRunsWhenRecordFails(t *testing.T) {
	s, p := testProfiles(t)
	roots := twoGenerations(t, s)
	ctx := context.Background()
	switchTo(t, p, 1, roots[0])
	if err := p.Resume("laptop"); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	root := treeWithActivation(t, s, "#!/bin/sh\ntouch "+marker+"\n")
	// Make writeHighest fail.
	defer func(w func(string, []byte) error) { writeMark = w }(writeMark)
	writeMark = func(file string, data []byte) error {
		if file == p.highestFile("laptop") {
			return errors.New("disk full")
		}
		return writeFileAtomic(file, data)
	}
	err := p.Activate(ctx, "laptop", 2, root, "bin/activate", ActivateOptions{Run: true})
	cur, _ := p.Current("laptop")
	_, ranErr := os.Stat(marker)
	if err != nil || cur != 2 || ranErr != nil {
		t.Fatalf("with the record unwritable: Activate %v, current %d, command ran: %v", err, cur, ranErr == nil)
	}
	if highest, _ := p.Highest("laptop"); highest != 2 {
		t.Fatalf("highest %d, want the current generation 2", highest)
	}
}
